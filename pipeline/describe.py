"""Shows what the configured model is, without training it.

    python -m pipeline.describe --config FILE [--set key=value ...] [--classes N]

For each backbone: its input, its output shape at the configured size, whether the head
pools it and why, its preprocessing and where fine-tuning starts; then the head, and the
trainable and frozen parameter counts of both training phases. The network is built with
random weights (nothing is downloaded); shapes and counts do not depend on the weights.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from pipeline import run_logging  # noqa: F401  (quiets TensorFlow before it is imported)
from pipeline.config import ConfigError, PipelineConfig, add_config_arguments, load_config


def _class_names(config: PipelineConfig, classes: Optional[int]) -> List[str]:
    if classes:
        return [f'class_{i}' for i in range(classes)]
    from components.example_gen.component import list_class_names
    return list_class_names(config.data_root)


def _shape(shape) -> str:
    return '(' + ', '.join('N' if d is None else str(d) for d in shape) + ')'


def describe(config: PipelineConfig, class_names: Sequence[str]) -> str:
    from components.trainer import backbones
    from components.trainer import model as model_lib
    from components.trainer import recipe
    spec = recipe.resolve(config.training())
    unchosen = recipe.unchosen_head_keys(spec) + (['augmentation'] if spec.is_unset('augmentation') else [])
    # For drawing the model only: auto chooses these on the validation split when it trains.
    spec = spec.model_copy(update={key: recipe.TUTORIAL[key] for key in unchosen})
    bases = model_lib.build_bases(spec, load_weights=False)
    lines = [f'Model for {len(class_names)} classes: {", ".join(class_names)}', '']
    for index, backbone in enumerate(spec.backbones, start=1):
        base = bases[backbone.key]
        facts = backbones.get(backbone.name)
        feature_map = backbones.output_is_feature_map(base)
        pooling, why = model_lib.pooling_decision(spec.head, feature_map, backbone.name)
        title = backbone.name + (f' (alpha {backbone.alpha})' if facts.has_alpha else '')
        if backbone.name == 'hub':
            title += f' {backbone.hub_handle}'
        lines.append(f'Backbone {index} of {len(spec.backbones)}: {title}')
        lines.append(f'  input        {backbone.key}: {backbone.image_size} x {backbone.image_size} x 3, '
                     f'weights {backbone.weights_description()}')
        lines.append(f'  preprocess   {facts.preprocess.__doc__.strip()}')
        lines.append(f'  output       {_shape(base.output_shape)}, '
                     f'{"a feature map" if feature_map else "an already pooled vector"}')
        pooled = {'gap': 'GlobalAveragePooling2D', 'max': 'GlobalMaxPooling2D', 'flatten': 'Flatten'}
        if pooling:
            size = base.output_shape[-1] if pooling != 'flatten' else \
                base.output_shape[1] * base.output_shape[2] * base.output_shape[3]
            lines.append(f'  pooling      {pooled[pooling]} -> (N, {size}), because {why}')
        else:
            lines.append(f'  pooling      none, because {why}')
        start = backbones.fine_tune_index(base, backbone.effective_fine_tune_at)
        lines.append(f'  fine-tuning  layers {start} to {len(base.layers) - 1} of {len(base.layers)} '
                     f'(from {base.layers[start].name}; fine_tune_at {backbone.effective_fine_tune_at!r})')
        warning = backbones.size_warning(backbone)
        if warning:
            lines.append(f'  note         {warning}')
        lines.append('')

    classifier = model_lib.build_classifier(spec, len(class_names), bases=bases)
    first_head_layer = 'hidden_0' if spec.hidden_units else 'dropout'
    width = classifier.model.get_layer(first_head_layer).input_shape[-1]
    head = [f'Concatenate -> ({width})' if len(spec.backbones) > 1 else f'({width})']
    if spec.any_random_backbone:
        head.append('standardisation measured on training images (weights: none)')
    head += [f'Dense({units}, relu)' for units in spec.hidden_units]
    outputs = 1 if len(class_names) == 2 else len(class_names)
    dropout = 'chosen by recipe auto' if 'dropout' in unchosen else spec.dropout
    head += [f'Dropout({dropout})', f'Dense({outputs}) logits']
    loss = ('one logit, sigmoid, binary cross-entropy' if outputs == 1
            else f'{outputs} logits, softmax, sparse categorical cross-entropy')
    lines.append('Head: ' + ' -> '.join(head) + f' ({loss})')
    if 'augmentation' in unchosen:
        lines.append('Augmentation (training only): chosen by recipe auto between none and flips')
    elif spec.augmentation:
        a = spec.augmentation
        lines.append(f'Augmentation (training only, the same for every backbone): flip {a.flip}, '
                     f'rotation {a.rotation}, zoom {a.zoom}, contrast {a.contrast}')
    lines.append('')
    model_lib.freeze_for_head(classifier)
    head_counts = model_lib.trainable_counts(classifier.model)
    model_lib.unfreeze_for_fine_tuning(classifier)
    tune_counts = model_lib.trainable_counts(classifier.model)
    lines.append(f'{"Parameters":<34}{"trainable":>14}{"frozen":>14}')
    head_epochs = 'epochs chosen' if 'head_epochs' in unchosen else f'{spec.head_epochs} epochs'
    tune_epochs = (f'up to {spec.fine_tune_epochs} epochs' if spec.early_stopping_patience
                   else f'{spec.fine_tune_epochs} epochs')
    lines.append(f'{f"  phase 1: head, {head_epochs}":<34}{head_counts[0]:>14,}{head_counts[1]:>14,}')
    lines.append(f'{f"  phase 2: fine-tuning, {tune_epochs}":<34}'
                 f'{tune_counts[0]:>14,}{tune_counts[1]:>14,}')
    lines.append(f'Recipe: {spec.recipe}' + (f' (chooses {", ".join(unchosen)} on the validation split)'
                                            if unchosen else ''))
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_config_arguments(parser)
    parser.add_argument('--classes', type=int, help='number of classes (default: the class folders of data_root)')
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        print(describe(config, _class_names(config, args.classes)))
    except (ConfigError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
