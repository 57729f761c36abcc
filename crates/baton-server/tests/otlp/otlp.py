"""The real OTLP definitions (PyPI opentelemetry-proto) against baton.

  otlp.py decode FILE   prints the spans of an ExportTraceServiceRequest (protobuf) as JSON
  otlp.py encode        writes a two-span request (checkout -> payment) to stdout
"""
import json
import sys

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span


def value(v):
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def decode(path):
    request = ExportTraceServiceRequest()
    with open(path, "rb") as f:
        request.ParseFromString(f.read())
    spans = []
    for rs in request.resource_spans:
        resource = {a.key: value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append({
                    "service": resource.get("service.name"),
                    "namespace": resource.get("service.namespace"),
                    "scope": ss.scope.name,
                    "name": s.name,
                    "trace": s.trace_id.hex(),
                    "span": s.span_id.hex(),
                    "parent": s.parent_span_id.hex(),
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "status": s.status.code,
                    "attributes": {a.key: value(a.value) for a in s.attributes},
                })
    print(json.dumps(spans))


def encode():
    trace = bytes.fromhex("5b8aa5a2d2c872e8321cf37308d69df2")
    def resource_spans(service, span):
        rs = ResourceSpans()
        rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
        rs.scope_spans.append(ScopeSpans(spans=[span]))
        return rs
    checkout = Span(trace_id=trace, span_id=bytes.fromhex("051581bf3cb55c13"), name="POST /checkout",
                    kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=1_700_000_000_000_000_000,
                    end_time_unix_nano=1_700_000_000_050_000_000)
    payment = Span(trace_id=trace, span_id=bytes.fromhex("5fb397be34d26b51"),
                   parent_span_id=bytes.fromhex("051581bf3cb55c13"), name="charge",
                   kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=1_700_000_000_010_000_000,
                   end_time_unix_nano=1_700_000_000_030_000_000)
    request = ExportTraceServiceRequest(resource_spans=[
        resource_spans("checkout", checkout), resource_spans("payment", payment)])
    sys.stdout.buffer.write(request.SerializeToString())


if __name__ == "__main__":
    if sys.argv[1] == "decode":
        decode(sys.argv[2])
    else:
        encode()
