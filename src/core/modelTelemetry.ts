/**
 * What one model call records, in the OpenTelemetry GenAI conventions: a `chat {model}` client span with the
 * request and response attributes, and the two client metrics. Content (the messages sent and the reply) only when
 * the telemetry opted in to it.
 */
import type { ModelDeployment } from './failover';
import type { ChatMessage, Completion, CompletionRequest } from './ports';
import { errorType, type Attributes, type SpanHandle, type Telemetry } from './telemetry';

export const GEN_AI_PROVIDER = 'azure.ai.openai';

export class ModelCallRecord {
  private readonly span: SpanHandle;
  private readonly started = performance.now();
  private readonly common: Attributes;

  constructor(
    private readonly telemetry: Telemetry,
    deployment: ModelDeployment,
    conversationId: string,
    request: CompletionRequest,
  ) {
    this.common = {
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': GEN_AI_PROVIDER,
      'gen_ai.request.model': deployment.modelName,
      'server.address': deployment.serverAddress,
      'azure.openai.deployment': deployment.name,
    };
    this.span = telemetry.startSpan(`chat ${deployment.modelName}`, {
      kind: 'client',
      attributes: {
        ...this.common,
        'gen_ai.conversation.id': conversationId,
        'gen_ai.request.max_tokens': request.maxResponseTokens,
        'gen_ai.request.temperature': request.temperature,
        'gen_ai.input.messages': telemetry.captureContent ? inputMessages(request.messages) : undefined,
      },
    });
  }

  /** Runs the call with this span active (the SDK's HTTP spans, where instrumented, nest under it). */
  run<T>(fn: () => T): T {
    return this.span.run(fn);
  }

  answered(completion: Completion): void {
    const response: Attributes = { 'gen_ai.response.model': completion.responseModel };
    this.span.setAttributes({
      ...response,
      'gen_ai.response.id': completion.responseId,
      'gen_ai.response.finish_reasons': [completion.finishReason],
      // A reply without usage: the turn counts it itself (chat.turn says the count); this span says nothing.
      'gen_ai.usage.input_tokens': completion.usage?.promptTokens,
      'gen_ai.usage.output_tokens': completion.usage?.completionTokens,
      'gen_ai.usage.cache_read.input_tokens': completion.usage?.cachedPromptTokens,
      'gen_ai.output.messages': this.telemetry.captureContent
        ? JSON.stringify([
            {
              role: 'assistant',
              parts: [{ type: 'text', content: completion.content }],
              finish_reason: completion.finishReason,
            },
          ])
        : undefined,
    });
    const attributes = { ...this.common, ...response };
    if (completion.usage) {
      this.telemetry.recordTokenUsage(completion.usage.promptTokens, { ...attributes, 'gen_ai.token.type': 'input' });
      this.telemetry.recordTokenUsage(completion.usage.completionTokens, {
        ...attributes,
        'gen_ai.token.type': 'output',
      });
    }
    this.telemetry.recordOperationDuration(this.elapsedSeconds(), attributes);
    this.span.end();
  }

  failed(error: unknown): void {
    this.span.fail(error);
    this.telemetry.recordOperationDuration(this.elapsedSeconds(), { ...this.common, 'error.type': errorType(error) });
    this.span.end();
  }

  private elapsedSeconds(): number {
    return (performance.now() - this.started) / 1000;
  }
}

/** The conventions' JSON shape for `gen_ai.input.messages`. */
function inputMessages(messages: ChatMessage[]): string {
  return JSON.stringify(
    messages.map((message) => ({
      role: message.role,
      ...(message.name ? { name: message.name } : {}),
      parts: [{ type: 'text', content: message.content }],
    })),
  );
}
