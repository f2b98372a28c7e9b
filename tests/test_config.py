"""The typed configuration: defaults, validation messages that name the key, overrides."""
import pytest
import yaml

from pipeline.config import (DEFAULT_CONFIG_PATH, PIPELINE_CONFIG_ENV, ConfigError, PipelineConfig,
                             load_config, parse_overrides)


def write_config(path, **values):
    path.write_text(yaml.safe_dump(values))
    return path


def test_shipped_default_config_is_valid_and_documented():
    config = load_config(DEFAULT_CONFIG_PATH)
    text = DEFAULT_CONFIG_PATH.read_text()
    for key in PipelineConfig.model_fields:
        assert key in text, f'{key} is not documented in {DEFAULT_CONFIG_PATH.name}'
    assert config.backbone == 'mobilenet_v2'
    assert config.data_root.endswith('data/sample')


def test_recipe_auto_is_the_default_and_leaves_its_choices_unset():
    config = PipelineConfig(data_root='.', output_dir='out')
    assert config.recipe == 'auto'
    assert (config.image_size, config.batch_size) == (160, 32)
    assert (config.learning_rate, config.dropout, config.head_epochs, config.fine_tune_epochs) == (None,) * 4
    assert config.training().backbones[0].effective_fine_tune_at == 100
    assert config.weights == 'imagenet'


def test_tutorial_recipe_is_the_tutorials_numbers():
    from components.trainer import recipe
    spec = recipe.resolve(PipelineConfig(data_root='.', output_dir='out', recipe='tutorial').training())
    assert (spec.learning_rate, spec.dropout, spec.head_l2) == (1e-4, 0.2, 0.0)
    assert (spec.head_epochs, spec.fine_tune_epochs) == (10, 10)
    assert (spec.head_optimizer, spec.fine_tune_optimizer) == ('adam', 'rmsprop')
    assert spec.effective_fine_tune_learning_rate == pytest.approx(1e-5)
    assert spec.fine_tune_schedule == 'constant' and spec.early_stopping_patience is None
    assert spec.early_stopping_metric == 'val_loss'
    assert spec.head_on_features is False and spec.augmentation is not None
    assert recipe.missing(spec) == []


def test_a_key_that_is_set_is_kept_by_either_recipe():
    from components.trainer import recipe
    for name in ('auto', 'tutorial'):
        spec = recipe.resolve(PipelineConfig(data_root='.', output_dir='out', recipe=name, learning_rate=0.01,
                                             fine_tune_epochs=4).training())
        assert (spec.learning_rate, spec.fine_tune_epochs) == (0.01, 4)
    auto = recipe.resolve(PipelineConfig(data_root='.', output_dir='out').training())
    assert recipe.unchosen_head_keys(auto) == ['learning_rate', 'dropout', 'head_l2', 'head_epochs']
    assert (auto.fine_tune_schedule, auto.early_stopping_patience, auto.head_on_features) == ('cosine', 6, True)
    assert (auto.fine_tune_optimizer, auto.effective_fine_tune_learning_rate) == ('sgd', 1e-3)
    assert (auto.fine_tune_epochs, auto.early_stopping_metric) == (6, 'val_accuracy')


def test_output_paths_default_under_output_dir(tmp_path):
    config = load_config(write_config(tmp_path / 'c.yaml', data_root='.', output_dir='out'))
    out = str(tmp_path / 'out')
    assert config.output_dir == out
    assert config.pipeline_root == out + '/pipeline_root'
    assert config.metadata_path == out + '/metadata.sqlite'
    assert config.serving_dir == out + '/serving'
    assert config.cli_home == out + '/tfx_cli'


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    (tmp_path / 'conf').mkdir()
    (tmp_path / 'data').mkdir()
    monkeypatch.chdir('/')
    config = load_config(write_config(tmp_path / 'conf' / 'c.yaml', data_root='../data', output_dir='../out'))
    assert config.data_root == str(tmp_path / 'data')


def test_unknown_key_is_named(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', learnig_rate=0.1)
    with pytest.raises(ConfigError, match=r'learnig_rate: unknown key'):
        load_config(path)


@pytest.mark.parametrize('key,value,message', [
    ('image_size', 16, 'image_size: must be between 32 \\(the minimum of mobilenet_v2\\)'),
    ('alpha', 0.6, 'alpha: must be one of'),
    ('batch_size', 0, 'batch_size: Input should be greater than or equal to 1'),
    ('learning_rate', -1, 'learning_rate: Input should be greater than 0'),
    ('weights', '/no/such/file.h5', "weights: is not one of imagenet, imagenet-torchvision, none, so it must be a path"),
    ('min_accuracy', -0.1, 'min_accuracy: Input should be greater than or equal to 0'),
    ('beam_args', ['direct_num_workers=2'], 'beam_args: .*is not a Beam flag'),
    ('pipeline_name', 'has space', 'pipeline_name: String should match pattern'),
    ('backbone', 'resnet9000', 'backbone: Input should be'),
    ('fine_tune_at', 1.5, 'fine_tune_at: a fraction of the layers must be between 0 and 1'),
    ('fine_tune_at', 154, 'fine_tune_at: mobilenet_v2 has 154 layers'),
    ('head', 'avg', 'head: Input should be'),
    ('hidden_units', [64, 0], 'hidden_units: every hidden layer needs at least one unit'),
    ('backbones', [], 'backbones: is empty'),
    ('component_resources', {'ImageExampleGen': {'cpu_limit': 2}},
     'component_resources: no resources can be set for ImageExampleGen'),
    ('component_resources', {'Trainer': {'memory_limit': '32 GB'}},
     'component_resources.Trainer.memory_limit: String should match pattern'),
    ('component_resources', {'Trainer': {'accelerator_count': 2}},
     'component_resources.Trainer: accelerator_count is set but accelerator_type is not'),
    ('layout', 'flat', "layout: Input should be 'auto', 'class_folders' or 'pre_split'"),
    ('max_image_pixels', 0, 'max_image_pixels: Input should be greater than or equal to 1'),
    ('max_image_pixels', 200_000_000, 'max_image_pixels: Input should be less than or equal to 178956970'),
    ('apply_exif_orientation', 'sometimes', 'apply_exif_orientation: Input should be a valid boolean'),
    ('drop_unusable_classes', 'maybe', 'drop_unusable_classes: Input should be a valid boolean'),
    ('tflite', ['int4'], "tflite.0: Input should be 'float32', 'float16', 'dynamic' or 'int8'"),
    ('tflite', ['int8', 'float16', 'int8'], 'tflite: .*int8 listed more than once'),
    ('tflite', 'int8', 'tflite: Input should be a valid list'),
    ('max_tflite_accuracy_drop', -2, 'max_tflite_accuracy_drop: Input should be greater than or equal to -1'),
])
def test_bad_values_are_named(tmp_path, key, value, message):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', **{key: value})
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_component_resources_numbers_become_kubernetes_quantities(tmp_path):
    config = load_config(write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', component_resources={
        'Trainer': {'cpu_limit': 8, 'memory_limit': '32Gi', 'accelerator_type': 'nvidia.com/gpu'}}))
    trainer = config.component_resources['Trainer']
    assert (trainer.cpu_limit, trainer.memory_limit, trainer.accelerator_count) == ('8', '32Gi', 1)


def test_missing_data_root_folder_is_named(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='nowhere', output_dir='o')
    with pytest.raises(ConfigError, match=r"data_root: .*nowhere' is not a folder"):
        load_config(path)


def test_nothing_to_train_is_an_error(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', head_epochs=0, fine_tune_epochs=0)
    with pytest.raises(ConfigError, match='nothing would be trained'):
        load_config(path)


def test_set_overrides_parse_yaml_values_and_nested_keys(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o')
    config = load_config(path, ['head_epochs=3', 'augmentation=false', 'split_ratios.test=20',
                                "beam_args=['--direct_num_workers=2']"])
    assert config.head_epochs == 3 and config.augmentation is None
    assert config.split_ratios.test == 20 and config.split_ratios.train == 80
    assert config.beam_args == ['--direct_num_workers=2']


def test_set_override_errors():
    with pytest.raises(ConfigError, match='expected key=value'):
        parse_overrides(['head_epochs'])


def test_set_relative_paths_resolve_against_cwd(tmp_path, monkeypatch):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o')
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'other').mkdir()
    assert load_config(path, ['data_root=other']).data_root == str(tmp_path / 'other')


def test_env_var_selects_the_config(tmp_path, monkeypatch):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', pipeline_name='from-env')
    monkeypatch.setenv(PIPELINE_CONFIG_ENV, str(path))
    assert load_config().pipeline_name == 'from-env'


def test_components_receive_only_their_keys(tmp_path):
    config = load_config(write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o'))
    assert config.preprocessing().model_dump() == {
        'inputs': [{'key': 'image', 'backbone': 'mobilenet_v2', 'image_size': 160}],
        'background': (255, 255, 255), 'resize': 'squash'}
    training = config.training().model_dump()
    assert 'min_accuracy' not in training and 'output_dir' not in training
    assert training['backbones'][0]['fine_tune_at'] is None
    assert config.training().backbones[0].effective_fine_tune_at == 100  # mobilenet_v2's, the tutorial's
    assert set(config.ingestion().model_dump()) == {'layout', 'split_ratios', 'apply_exif_orientation',
                                                    'max_image_pixels', 'drop_unusable_classes'}
    assert 'layout' not in training


@pytest.mark.parametrize('written,rgb', [
    ('white', (255, 255, 255)), ('black', (0, 0, 0)), ('Black', (0, 0, 0)), ('#10a0FF', (16, 160, 255)),
    ([12, 0, 255], (12, 0, 255)),
])
def test_background_reaches_transform_as_rgb(tmp_path, written, rgb):
    config = load_config(write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', background=written))
    assert config.preprocessing().background == rgb
    assert 'background' not in config.training().model_dump()  # changing it must not re-train by itself


def test_background_and_resize_defaults_and_overrides(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o')
    assert (load_config(path).background, load_config(path).resize) == ((255, 255, 255), 'squash')
    spec = load_config(path, ["background='#000000'", 'resize=pad']).preprocessing()
    assert (spec.background, spec.resize) == ((0, 0, 0), 'pad')
    assert load_config(path, ['resize=crop', 'background=[1, 2, 3]']).preprocessing().background == (1, 2, 3)


@pytest.mark.parametrize('value', ['pink', '#12345', '#1234567', 'ffffff', [1, 2], [1, 2, 300], [1, 2, -1],
                                   [1.5, 2, 3], [True, 0, 0], 255, None])
def test_bad_background_is_an_error_naming_the_key(tmp_path, value):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', background=value)
    with pytest.raises(ConfigError, match=r"background: .* is not a colour: use white, black, '#RRGGBB'"):
        load_config(path)


def test_unquoted_hex_background_explains_yaml_comments(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o')
    path.write_text(path.read_text() + 'background: #ffffff\n')  # YAML reads null: # starts a comment
    with pytest.raises(ConfigError, match=r"background: None is not a colour.*quote '#RRGGBB'"):
        load_config(path)


def test_bad_resize_is_an_error_naming_the_key(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', resize='stretch')
    with pytest.raises(ConfigError, match=r"resize: Input should be 'squash', 'pad' or 'crop'"):
        load_config(path)


def test_resize_modes_agree_between_the_spec_and_the_graph():
    import typing
    from components.transform.image_decoding import RESIZE_MODES
    from components.transform.spec import DEFAULT_RESIZE, ResizeMode
    assert typing.get_args(ResizeMode) == RESIZE_MODES
    assert DEFAULT_RESIZE in RESIZE_MODES


def test_pixel_limit_bound_is_pillows_own():
    from components.example_gen.ingestion.inspection import PILLOW_HARD_PIXEL_LIMIT
    from components.example_gen.spec import PILLOW_HARD_PIXEL_LIMIT as configured
    assert configured == PILLOW_HARD_PIXEL_LIMIT


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match='not found'):
        load_config(tmp_path / 'none.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('data_root: [unclosed')
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_config(bad)


def test_ensemble_entries_inherit_top_level_keys_and_errors_name_the_entry(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', weights='none', image_size=96,
                        backbones=['vgg16', {'name': 'inception_v3', 'image_size': 299, 'fine_tune_at': 0.8}])
    specs = load_config(path).training().backbones
    assert [(b.name, b.key, b.image_size, b.weights) for b in specs] == [
        ('vgg16', 'image_0_vgg16', 96, 'none'), ('inception_v3', 'image_1_inception_v3', 299, 'none')]
    assert specs[1].fine_tune_at == 0.8
    bad = write_config(tmp_path / 'bad.yaml', data_root='.', output_dir='o', weights='none',
                       backbones=['vgg16', {'name': 'inception_v3', 'image_size': 64}])
    with pytest.raises(ConfigError, match=r'backbones\[1\] \(inception_v3\): image_size: must be between 75'):
        load_config(bad)


def test_weights_and_hub_handle_fit_the_backbone(tmp_path):
    torchvision_vgg = write_config(tmp_path / 'a.yaml', data_root='.', output_dir='o', backbone='vgg16',
                                   weights='imagenet-torchvision')
    with pytest.raises(ConfigError, match='imagenet-torchvision exists for mobilenet_v2 with alpha 1.0 only, not vgg16'):
        load_config(torchvision_vgg)
    hub_without_handle = write_config(tmp_path / 'b.yaml', data_root='.', output_dir='o', backbone='hub')
    with pytest.raises(ConfigError, match='hub_handle: backbone hub needs hub_handle'):
        load_config(hub_without_handle)
    handle_without_hub = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o', hub_handle='x')
    with pytest.raises(ConfigError, match='hub_handle: only applies to backbone hub'):
        load_config(handle_without_hub)
    (tmp_path / 'model').mkdir()
    hub = load_config(write_config(tmp_path / 'd.yaml', data_root='.', output_dir='o', backbone='hub',
                                   hub_handle='model', weights='imagenet-torchvision'))
    [spec] = hub.training().backbones
    assert spec.hub_handle == str(tmp_path / 'model')  # relative to the config file
    assert spec.weights_description() == "the hub module's own"


def test_augmentation_switch_and_settings(tmp_path):
    path = write_config(tmp_path / 'c.yaml', data_root='.', output_dir='o')
    assert load_config(path).training().augmentation == 'auto'  # the recipe's to choose
    assert load_config(path, ['augmentation=true']).training().augmentation.rotation == 0.2  # the tutorial's
    assert load_config(path, ['augmentation=false']).training().augmentation is None
    tuned = load_config(path, ['augmentation={zoom: 0.1, contrast: 0.2}']).training().augmentation
    assert (tuned.flip, tuned.rotation, tuned.zoom, tuned.contrast) == (True, 0.2, 0.1, 0.2)
    with pytest.raises(ConfigError, match='augmentation: rotation: Input should be less than or equal to 0.5'):
        load_config(path, ['augmentation={rotation: 2}'])
    with pytest.raises(ConfigError, match="augmentation: must be auto, true, false or a mapping .* got 'sometimes'"):
        load_config(path, ['augmentation=sometimes'])
