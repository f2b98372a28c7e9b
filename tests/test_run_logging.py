"""The console shows progress and our own messages; everything else goes to the log file only."""
import logging

from pipeline import run_logging


def test_console_filter_and_full_log_file(tmp_path, capsys):
    saved = logging.getLogger().handlers[:]
    try:
        log_file = run_logging.configure(str(tmp_path))
        logging.getLogger('absl').info('Component Trainer is running.')
        logging.getLogger('absl').info('Publishing output artifacts defaultdict(...)')
        logging.getLogger('apache_beam.runners').warning('Make sure that locally built Python SDK...')
        logging.getLogger('components.trainer').info('epoch 1/2 (head): accuracy 0.5')
        logging.getLogger('tensorflow').error('a real problem')
        console = capsys.readouterr().err
    finally:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in saved:
            root.addHandler(handler)
    assert 'Component Trainer is running.' in console
    assert 'epoch 1/2 (head)' in console and 'a real problem' in console
    assert 'Publishing output artifacts' not in console and 'locally built' not in console
    everything = log_file.read_text()
    assert 'Publishing output artifacts' in everything and 'locally built' in everything
