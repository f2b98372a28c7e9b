"""Two defects of the S3 stack, mended in every process (imported from a .pth line).

1. tensorflow-io 0.37.1's S3 file system aborts the process at exit (SIGABRT, status 134) once
   it was used: the AWS SDK's C++ static destructors call a pure virtual method
   (tensorflow/io#2039; fixed upstream by tensorflow/io#2120, in no release). A Kubeflow step
   that exits 134 has failed, whatever it did. So the exit status is recorded (sys.exit and
   uncaught exceptions), and an atexit handler registered first, hence run last, flushes and
   leaves with os._exit(status) when tensorflow_io is loaded in a process of a run that uses
   S3 ($IMAGE_PIPELINE_USES_S3, read at exit: the run sets it after start-up): only the
   interpreter's final teardown and the C++ destructors are skipped. Files are written on
   close, before that. A bare `raise SystemExit(n)` is not seen (it bypasses sys.exit and the
   excepthook), so every entry point of this project exits through sys.exit.
2. Beam 2.59's S3 file system cannot write an empty file: it completes a multipart upload of
   no parts, which S3 refuses with MalformedXML (apache/beam#21369). ImageExampleGen writes
   empty report shards (no converted image is the usual case). The uploader is patched, as
   soon as Beam imports it, to put an empty object instead.

Processes that never load tensorflow_io or Beam's S3 module are not changed (one string
comparison per import for the patch's finder).
"""
import atexit
import importlib.abc
import importlib.machinery
import os
import sys

from components.storage import USES_S3_ENV

_BEAM_S3IO = 'apache_beam.io.aws.s3io'
_status = [0]


def _status_of(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1  # sys.exit('message'): Python prints it and exits 1


def _keep_exit_status() -> None:
    real_exit, real_excepthook = sys.exit, sys.excepthook

    def recording_exit(code=None):
        _status[0] = _status_of(code)
        real_exit(code)

    def recording_excepthook(kind, value, traceback):
        _status[0] = _status_of(value.code) if isinstance(value, SystemExit) else 1
        real_excepthook(kind, value, traceback)

    def leave_before_the_abort():
        if 'tensorflow_io' not in sys.modules or os.environ.get(USES_S3_ENV) != '1':
            return
        import logging
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(_status[0])

    sys.exit, sys.excepthook = recording_exit, recording_excepthook
    atexit.register(leave_before_the_abort)


def _allow_empty_uploads(s3io) -> None:
    finish = s3io.S3Uploader.finish

    def finish_allowing_empty(self):
        if not self.parts and not self.buffer and self.last_error is None:
            client = self._client.client  # noqa: SLF001  (boto3's client inside Beam's)
            client.abort_multipart_upload(Bucket=self._bucket, Key=self._name, UploadId=self.upload_id)
            client.put_object(Bucket=self._bucket, Key=self._name, Body=b'', ContentType=self._mime_type)
            return None
        return finish(self)

    s3io.S3Uploader.finish = finish_allowing_empty


class _PatchBeamS3OnImport(importlib.abc.MetaPathFinder):
    """Patches Beam's S3 uploader when (and only if) a process imports it."""

    def find_spec(self, name, path, target=None):
        if name != _BEAM_S3IO:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _allow_empty_uploads(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    if getattr(sys, '_image_pipeline_s3_startup', False):
        return
    sys._image_pipeline_s3_startup = True  # noqa: SLF001  (once per process)
    _keep_exit_status()
    if _BEAM_S3IO in sys.modules:
        _allow_empty_uploads(sys.modules[_BEAM_S3IO])
    else:
        sys.meta_path.insert(0, _PatchBeamS3OnImport())


install()
