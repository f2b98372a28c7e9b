"""A small in-memory server for the part of Kubeflow Pipelines' REST API (v2beta1) that
`kfp.Client` uses to upload pipelines and manage recurring runs.

Responses are serialized from kfp_server_api's own models, so the real client reads them as it
reads the real server's. Uploaded specs must parse as kfp's PipelineSpec, as the real server
requires. Every request is recorded for the tests to inspect.
"""
from __future__ import annotations

import email.parser
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, urlparse

import kfp_server_api
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

API = '/apis/v2beta1'


class KfpApiServer:
    def __init__(self):
        self.requests: List[Dict[str, Any]] = []
        self.pipelines: Dict[str, kfp_server_api.V2beta1Pipeline] = {}
        self.versions: Dict[str, kfp_server_api.V2beta1PipelineVersion] = {}
        self.uploaded_specs: Dict[str, pipeline_spec_pb2.PipelineSpec] = {}  # by version id
        self.experiments: Dict[str, kfp_server_api.V2beta1Experiment] = {}
        self.recurring_runs: Dict[str, kfp_server_api.V2beta1RecurringRun] = {}
        self._ids = itertools.count(1)
        self._serializer = kfp_server_api.ApiClient()
        self._http = ThreadingHTTPServer(('127.0.0.1', 0), _handler_for(self))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self._http.server_port}'

    def __enter__(self) -> 'KfpApiServer':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    def requests_to(self, method: str, path: str) -> List[Dict[str, Any]]:
        return [r for r in self.requests if r['method'] == method and r['path'] == API + path]

    # --- the API ----------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: Dict[str, str], body: Any) -> Any:
        route = path[len(API):]
        if (method, route) == ('GET', '/healthz'):
            return kfp_server_api.V2beta1GetHealthzResponse(multi_user=False)
        if (method, route) == ('GET', '/pipelines'):
            return kfp_server_api.V2beta1ListPipelinesResponse(
                pipelines=_matching(self.pipelines.values(), query) or None)
        if (method, route) == ('POST', '/pipelines/upload'):
            pipeline = kfp_server_api.V2beta1Pipeline(pipeline_id=self._id('pipeline'), display_name=query['name'],
                                                      namespace=query.get('namespace'))
            self.pipelines[pipeline.pipeline_id] = pipeline
            self._add_version(pipeline.pipeline_id, query['name'], body)  # as Kubeflow does
            return pipeline
        if (method, route) == ('POST', '/pipelines/upload_version'):
            return self._add_version(query['pipelineid'], query['name'], body)
        if method == 'GET' and route.startswith('/pipelines/') and route.endswith('/versions'):
            pipeline_id = route.split('/')[2]
            versions = [v for v in self.versions.values() if v.pipeline_id == pipeline_id]
            return kfp_server_api.V2beta1ListPipelineVersionsResponse(
                pipeline_versions=_matching(versions, query) or None)
        if (method, route) == ('GET', '/experiments'):
            return kfp_server_api.V2beta1ListExperimentsResponse(
                experiments=_matching(self.experiments.values(), query) or None)
        if (method, route) == ('POST', '/experiments'):
            experiment = kfp_server_api.V2beta1Experiment(experiment_id=self._id('experiment'),
                                                          display_name=body['display_name'])
            self.experiments[experiment.experiment_id] = experiment
            return experiment
        if (method, route) == ('POST', '/recurringruns'):
            run = self._serializer.deserialize(_Response(json.dumps(body)), 'V2beta1RecurringRun')
            run.recurring_run_id = self._id('recurring-run')
            self.recurring_runs[run.recurring_run_id] = run
            return run
        if (method, route) == ('GET', '/recurringruns'):
            runs = [r for r in self.recurring_runs.values()
                    if query.get('experiment_id') in (None, r.experiment_id)]
            return kfp_server_api.V2beta1ListRecurringRunsResponse(recurring_runs=_matching(runs, query) or None)
        if method == 'POST' and route.startswith('/recurringruns/') and route.endswith(':disable'):
            self.recurring_runs[route.split('/')[2].split(':')[0]].mode = 'DISABLE'
            return {}
        if method == 'DELETE' and route.startswith('/recurringruns/'):
            del self.recurring_runs[route.split('/')[2]]
            return {}
        raise LookupError(f'{method} {path} is not implemented by this test server')

    def _id(self, kind: str) -> str:
        return f'{kind}-{next(self._ids)}'

    def _add_version(self, pipeline_id: str, name: str, spec_yaml: bytes) -> kfp_server_api.V2beta1PipelineVersion:
        spec = json_format.ParseDict(yaml.safe_load(spec_yaml), pipeline_spec_pb2.PipelineSpec())
        version = kfp_server_api.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=self._id('version'), display_name=name)
        self.versions[version.pipeline_version_id] = version
        self.uploaded_specs[version.pipeline_version_id] = spec
        return version

    def serialize(self, response: Any) -> bytes:
        return json.dumps(self._serializer.sanitize_for_serialization(response)).encode()


class _Response:
    """What ApiClient.deserialize reads: a body in `data`."""

    def __init__(self, data: str):
        self.data = data


def _matching(items, query: Dict[str, str]) -> list:
    """Applies `display_name EQUALS x` filters, the only kind sent here (EQUALS is enum value 1)."""
    items = list(items)
    if 'filter' not in query:
        return items
    for predicate in json.loads(query['filter'])['predicates']:
        if predicate['operation'] not in ('EQUALS', 1) or predicate['key'] != 'display_name':
            raise NotImplementedError(f'filter {predicate}')
        items = [item for item in items if item.display_name == predicate['stringValue']]
    return items


def _uploaded_file(content_type: str, body: bytes) -> bytes:
    message = email.parser.BytesParser().parsebytes(f'Content-Type: {content_type}\r\n\r\n'.encode() + body)
    [part] = [p for p in message.get_payload() if p.get_param('name', header='content-disposition') == 'uploadfile']
    return part.get_payload(decode=True)


def _handler_for(server: KfpApiServer):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
            content_type = self.headers.get('Content-Type', '')
            body: Optional[Any] = None
            if content_type.startswith('multipart/form-data'):
                body = _uploaded_file(content_type, raw)
            elif raw:
                body = json.loads(raw)
            server.requests.append(dict(method=method, path=url.path, query=query, body=body))
            try:
                payload, status = server.serialize(server.handle(method, url.path, query, body)), 200
            except LookupError as error:
                payload, status = json.dumps({'error': str(error)}).encode(), 404
            except Exception as error:  # noqa: BLE001  (answer, so the client fails instead of retrying)
                payload, status = json.dumps({'error': repr(error)}).encode(), 500
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):  # noqa: N802
            self._serve('GET')

        def do_POST(self):  # noqa: N802
            self._serve('POST')

        def do_DELETE(self):  # noqa: N802
            self._serve('DELETE')

        def log_message(self, *args):
            pass

    return Handler
