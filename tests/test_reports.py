"""The report figures are real images with the expected panels; the numbers are right."""
import numpy as np
from PIL import Image

from components.trainer import reports


def test_learning_curves_show_accuracy_and_loss_with_fine_tuning_marked(tmp_path):
    history = {'accuracy': [0.5, 0.6, 0.7, 0.8], 'val_accuracy': [0.5, 0.55, 0.7, 0.75],
               'loss': [1.0, 0.8, 0.6, 0.5], 'val_loss': [1.1, 0.9, 0.7, 0.65]}
    path = tmp_path / 'curves.png'
    figure = reports.learning_curves(history, fine_tune_start=2, path=str(path))
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ['Training and validation accuracy', 'Training and validation loss']
    for axis in figure.axes:
        labels = [line.get_label() for line in axis.get_lines()]
        assert labels[:2] in (['Training accuracy', 'Validation accuracy'], ['Training loss', 'Validation loss'])
        marker = [line for line in axis.get_lines() if line.get_label() == 'Start fine-tuning']
        assert marker and marker[0].get_xdata()[0] == 2.5  # between epoch 2 and 3
    image = Image.open(path)
    assert image.format == 'PNG' and image.width > 300 and image.height > 300
    assert len(np.unique(np.asarray(image.convert('L')))) > 10  # not a blank canvas


def test_confusion_matrix_and_per_class_metrics(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    matrix = reports.confusion_matrix(labels, predicted, 3)
    np.testing.assert_array_equal(matrix, [[2, 1, 0], [0, 2, 0], [1, 0, 0]])
    rows = {row['class']: row for row in reports.per_class_metrics(matrix, ['a', 'b', 'c'])}
    assert rows['a']['precision'] == 2 / 3 and rows['a']['recall'] == 2 / 3
    assert rows['b']['precision'] == 2 / 3 and rows['b']['recall'] == 1.0
    assert rows['b']['f1'] == 0.8
    assert rows['c'] == {'class': 'c', 'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 1}
    path = tmp_path / 'matrix.png'
    figure = reports.confusion_matrix_figure(matrix, ['a', 'b', 'c'], str(path))
    assert figure.axes[0].get_xlabel() == 'predicted class'
    assert [t.get_text() for t in figure.axes[0].texts] == ['2', '1', '0', '0', '2', '0', '1', '0', '0']
    assert Image.open(path).format == 'PNG'


def test_markdown_summary_has_the_sections_people_look_for():
    summary = {
        'class_names': ['cat', 'dog'],
        'data': {'train': {'cat': 8, 'dog': 9}, 'test': {'cat': 1, 'dog': 2}},
        'backbones': [{'name': 'mobilenet_v2', 'image_size': 160, 'weights': 'imagenet-torchvision',
                       'fine_tune_at': 100}],
        'hyperparameters': {'learning_rate': 0.0001},
        'phase_metrics': {'head': {'test_accuracy': 0.8}, 'fine-tuning': {'test_accuracy': 0.9}},
        'per_class_test': [{'class': 'cat', 'precision': 1.0, 'recall': 0.5, 'f1': 0.667, 'support': 2}],
        'evaluation': {'overall': {'sparse_categorical_accuracy': 0.9}, 'baseline': {},
                       'per_class': {'cat': {'example_count': 1, 'sparse_categorical_accuracy': 1.0}},
                       'gate_failures': []},
        'blessed': True,
    }
    text = reports.markdown(summary)
    for expected in ('| cat | 8 | 1 |', 'backbone mobilenet_v2 at 160 px, weights imagenet-torchvision',
                     '| fine-tuning | test_accuracy | 0.9000 |', '| cat | 1.000 | 0.500 | 0.667 | 2 |',
                     'sparse_categorical_accuracy: 0.9000', '**Blessed: yes, pushed**'):
        assert expected in text
