"""A Python SDK worker as a TaskManager starts it in Beam's PROCESS environment.

    python -m pipeline.flink.sdk_worker --id=ID --provision_endpoint=HOST:PORT [...]

Beam's PROCESS environment runs one executable with the SDK container contract's flags. Beam's
own (`boot`, a Go program) ships only inside its SDK container images, where it also installs
the job's staged packages. Here the workers run in this virtualenv, which has every package
already, so this does only the rest of the contract: ask the provision service where the
runner's control endpoint is, then serve it, as Beam's worker pool does for each worker.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import grpc
from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc
from apache_beam.runners.worker.sdk_worker import SdkHarness

PROVISION_TIMEOUT = 60


def control_endpoint(provision_endpoint: str, worker_id: str) -> str:
    with grpc.insecure_channel(provision_endpoint) as channel:
        grpc.channel_ready_future(channel).result(timeout=PROVISION_TIMEOUT)
        info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[('worker_id', worker_id)],
            timeout=PROVISION_TIMEOUT).info
    return info.control_endpoint.url


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--id', required=True)
    parser.add_argument('--provision_endpoint', required=True)
    args, _ = parser.parse_known_args(argv)  # --semi_persist_dir: nothing is installed, nothing kept
    logging.basicConfig(level=logging.INFO)
    control = control_endpoint(args.provision_endpoint, args.id)
    logging.getLogger(__name__).info('SDK worker %s (process %d) serving %s', args.id, os.getpid(), control)
    # As worker_pool_main starts its workers: no state cache, no time-based data buffering.
    SdkHarness(control, worker_id=args.id, state_cache_size=0, data_buffer_time_limit_ms=-1).run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
