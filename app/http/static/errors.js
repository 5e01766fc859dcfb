// What an ApiError means to the person chatting, in their words, and what they can do about it.

/**
 * `{title, text, action, wait}`: `action` is 'retry' (try the same message again), 'token'
 * (enter another key) or null; `wait` is the seconds to wait before a retry can succeed.
 */
export function describeError(error) {
  const wait = error.retryAfter;
  const said = error.message;
  if (error.type === 'unreachable') {
    return {
      title: 'Can’t reach the backend',
      text: `No answer from ${location.origin}. Check that the server is running, then retry.`,
      action: 'retry',
    };
  }
  if (error.midStream) {
    return {
      title: 'The answer broke off',
      text: `${capitalize(said)}. What arrived so far is kept in the conversation.`,
      action: 'retry',
    };
  }
  switch (error.status) {
    case 401:
      return {
        title: 'Key not accepted',
        text:
          error.type === 'upstream_unauthorized'
            ? 'OpenRouter refused this key. Check that it is complete and still active, or enter another.'
            : `The server refused this key: ${said}.`,
        action: 'token',
      };
    case 402:
      return {
        title: 'Out of credits',
        text:
          'The credits on this OpenRouter key do not cover this request. Add credits, ' +
          'or pick a cheaper model, then retry.',
        action: 'retry',
      };
    case 429:
      return {
        title: 'Rate limited',
        text: 'Too many requests right now.',
        detail: said,
        action: 'retry',
        wait: wait ?? 5,
      };
    case 404:
      if (error.type === 'upstream_not_found') {
        return {title: 'Model not found', text: `${capitalize(said)}. Pick another model.`};
      }
      return {
        title: 'Conversation not found',
        text: 'It may have expired or been deleted. Start a new chat.',
      };
    case 413:
      return {title: 'Message too long', text: 'Shorten the message and send it again.'};
    case 400:
      return {title: 'Not accepted', text: `${capitalize(said)}.`};
    case 503:
      if (error.type === 'storage_unavailable') {
        return {
          title: 'Storage unavailable',
          text: 'The server cannot reach its database right now. Retry in a moment.',
          action: 'retry',
          wait,
        };
      }
      return {title: 'Provider unavailable', text: `${capitalize(said)}.`, action: 'retry', wait};
    case 504:
      return {
        title: 'No answer in time',
        text: 'The model did not answer in time. Retry, or pick another model.',
        action: 'retry',
      };
    case 502:
      return {title: 'The provider failed', text: `${capitalize(said)}.`, action: 'retry'};
    default:
      return {title: `Error ${error.status}`, text: `${capitalize(said)}.`, action: 'retry', wait};
  }
}

function capitalize(text) {
  const trimmed = String(text ?? '').trim().replace(/[.\s]+$/, '');
  return trimmed ? trimmed[0].toUpperCase() + trimmed.slice(1) : 'Something went wrong';
}
