// OpenTelemetry tracing. No-op unless OTEL_EXPORTER_OTLP_ENDPOINT (or --otlp-endpoint) is set: the API's default
// tracer does nothing, so instrumented code pays almost nothing when tracing is off.
import { trace, SpanStatusCode, type Span, type Tracer, type Attributes, context } from '@opentelemetry/api';

let provider: { shutdown(): Promise<void>; forceFlush(): Promise<void> } | undefined;

export function tracer(): Tracer {
  return trace.getTracer('transship');
}

/** Starts the OTLP exporter when an endpoint is configured. Safe to call more than once. */
export async function initTracing(endpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName = 'transship'): Promise<void> {
  if (!endpoint || provider) return;
  const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  const url = endpoint.endsWith('/v1/traces') ? endpoint : `${endpoint.replace(/\/$/, '')}/v1/traces`;
  const p = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url }))],
  });
  trace.setGlobalTracerProvider(p);
  provider = p;
}

export async function shutdownTracing(): Promise<void> {
  const p = provider;
  provider = undefined;
  await p?.shutdown().catch(() => undefined);
}

/** Runs `fn` inside a span that ends with the right status whatever happens. */
export async function withSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer().startActiveSpan(name, { attributes }, async (span) => {
    try {
      const result = await fn(span);
      span.setStatus({ code: SpanStatusCode.OK });
      return result;
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** A short event span (no work inside), e.g. `upload.retry.success`, parented on the active span. */
export function markSpan(name: string, attributes: Attributes, error?: boolean): void {
  const span = tracer().startSpan(name, { attributes }, context.active());
  if (error) span.setStatus({ code: SpanStatusCode.ERROR });
  span.end();
}
