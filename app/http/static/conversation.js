// The conversation pane: the messages, an answer as it streams in, and what went wrong.

import {element} from './dom.js';
import {describeError} from './errors.js';
import {formatCost, formatCount, turnSummary} from './format.js';
import {renderMarkdown} from './markdown.js';

/** An answer: rendered again as Markdown at most once a frame while text arrives. */
class Answer {
  constructor(container) {
    this.text = '';
    this.element = element('article', container, 'message assistant');
    this.element.dataset.state = 'streaming';
    this.body = element('div', this.element, 'markdown');
    element('span', element('span', this.body, 'typing'), 'visually-hidden', 'Waiting for the answer');
    this.footer = element('footer', this.element, 'meta');
    this.frame = 0;
  }

  append(text) {
    this.text += text;
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  render() {
    if (this.text) this.body.replaceChildren(renderMarkdown(this.text));
  }

  settle(state) {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.element.dataset.state = state;
    if (this.text) this.render();
    else this.body.replaceChildren();
  }

  /** The stream's `done` event: the final text and what the turn cost. */
  done(event) {
    this.text = event.response;
    this.settle('done');
    this.footer.textContent = turnSummary({model: event.model_used, usage: event.usage});
  }

  stopped() {
    this.settle('stopped');
    element('p', this.element, 'note', this.text ? 'Stopped. The text so far is kept.' : 'Stopped.');
  }

  /** Shows `error` in words; `retry` sends the same message again, `changeToken` asks for a key. */
  failed(error, {retry, changeToken}) {
    this.settle(this.text ? 'broken' : 'error');
    const description = describeError(error);
    const card = element('div', this.element, 'error-card');
    card.setAttribute('role', 'alert');
    element('strong', card, 'error-title', description.title);
    element('p', card, 'error-text', description.text);
    if (description.detail) element('p', card, 'muted', description.detail);
    if (error.requestId) element('p', card, 'muted request-id', `Request id ${error.requestId}`);
    const wait = element('p', card, 'wait');
    wait.hidden = true;
    const actions = element('div', card, 'error-actions');
    if (description.action === 'token') {
      const button = element('button', actions, 'button subtle', 'Enter another key');
      button.type = 'button';
      button.onclick = changeToken;
    }
    if (description.action === 'retry') {
      const button = element('button', actions, 'button subtle', 'Retry');
      button.type = 'button';
      button.onclick = retry;
      if (description.wait) countdown(wait, button, description.wait);
    }
  }
}

/** "Try again in N s" in `line`, counting down; Retry is enabled when the wait is over. */
function countdown(line, button, seconds) {
  let left = Math.ceil(seconds);
  line.hidden = false;
  button.disabled = true;
  const tick = () => {
    if (!line.isConnected) {
      clearInterval(timer);
    } else if (left <= 0) {
      clearInterval(timer);
      line.textContent = 'You can try again now.';
      button.disabled = false;
    } else {
      line.textContent = `Try again in ${left} s.`;
      left -= 1;
    }
  };
  const timer = setInterval(tick, 1000);
  tick();
}

export class Conversation {
  constructor({list, empty, systemNote, systemNoteText, scroller}) {
    this.list = list;
    this.empty = empty;
    this.systemNote = systemNote;
    this.systemNoteText = systemNoteText;
    this.scroller = scroller;
  }

  clear() {
    this.list.replaceChildren();
    this.systemNote.hidden = true;
    this.empty.hidden = false;
  }

  /** A stored session: its system prompt and messages as GET /sessions/{id} gives them. */
  show(session) {
    this.clear();
    if (session.system_prompt) {
      this.systemNoteText.textContent = session.system_prompt;
      this.systemNote.hidden = false;
    }
    for (const message of session.messages) {
      if (message.role === 'user') {
        this.addQuestion(message.content);
        continue;
      }
      const answer = new Answer(this.list);
      answer.text = message.content;
      answer.settle('done');
      answer.footer.textContent = turnSummary(message);
      if (message.interrupted) element('p', answer.element, 'note', 'Stopped before the end.');
      if (message.error) element('p', answer.element, 'note', `Broke off: ${message.error}`);
    }
    this.empty.hidden = session.messages.length > 0;
    this.scrollToEnd(true);
  }

  addQuestion(text) {
    this.empty.hidden = true;
    const article = element('article', this.list, 'message user');
    element('p', element('div', article, 'bubble'), 'user-text', text);
    return article;
  }

  /** Marks a question the server refused: it is not part of the conversation. */
  unsent(question) {
    question.classList.add('unsent');
    element('p', question, 'note', 'Not sent');
  }

  addAnswer() {
    return new Answer(this.list);
  }

  /** Follows the answer down, unless the reader has scrolled up to read. */
  scrollToEnd(force = false) {
    const {scroller} = this;
    const nearEnd = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
    if (force || nearEnd) scroller.scrollTop = scroller.scrollHeight;
  }
}

/** The session's totals, as the worker counted them: short, and in full. */
export function sessionTotals(usage) {
  if (!usage || !usage.turns) return {short: '', full: ''};
  const turns = `${usage.turns} ${usage.turns === 1 ? 'turn' : 'turns'}`;
  const cost = formatCost(usage.cost);
  const tokens = `${formatCount(usage.total_tokens)} tokens`;
  return {short: `${turns} · ${cost}`, full: `${turns} · ${tokens} · ${cost}`};
}
