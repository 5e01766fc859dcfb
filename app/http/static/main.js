// The chat page: the key, the model, the sessions and the conversation, wired to this backend.

import {Api, ApiError, newSessionId} from './api.js';
import {Conversation} from './conversation.js';
import {describeError} from './errors.js';
import {ModelPicker} from './models.js';
import {SessionList} from './sessions.js';

const TOKEN_KEY = 'chat.token';
const MODEL_KEY = 'chat.model';
const $ = (id) => document.getElementById(id);

class ChatPage {
  constructor() {
    // The key lives in this tab's session storage only, and goes to this origin only.
    this.api = new Api(sessionStorage.getItem(TOKEN_KEY) ?? '');
    this.sessionId = null;
    // Whether the server holds the session (and so its system prompt) already.
    this.stored = false;
    // The AbortController of the answer coming in, if one is.
    this.streaming = null;
    // A message refused for its key, put back once another key is entered.
    this.draft = '';

    this.conversation = new Conversation({
      list: $('messages'),
      empty: $('empty'),
      systemNote: $('system-note'),
      systemNoteText: $('system-note-text'),
      scroller: $('conversation'),
    });
    this.sessions = new SessionList({
      list: $('session-list'),
      note: $('session-note'),
      more: $('more-sessions'),
      onOpen: (id) => this.open(id),
      onDelete: (summary) => this.confirmDelete(summary),
    });
    this.models = new ModelPicker({
      input: $('model-search'),
      list: $('model-list'),
      onChange: (id) => {
        if (id === null) localStorage.removeItem(MODEL_KEY);
        else localStorage.setItem(MODEL_KEY, id);
        $('message').focus();
      },
    });
    this.models.select(localStorage.getItem(MODEL_KEY));
    this.bind();
  }

  bind() {
    $('composer').addEventListener('submit', (event) => {
      event.preventDefault();
      this.send($('message').value);
    });
    $('message').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send($('message').value);
      }
    });
    document.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape' || document.querySelector('dialog[open]')) return;
      if (document.body.classList.contains('drawer-open')) this.toggleDrawer(false);
      else if (this.streaming) this.stop();
    });
    $('stop').addEventListener('click', () => this.stop());
    $('new-chat').addEventListener('click', () => this.startNew());
    $('change-token').addEventListener('click', () => this.askToken());
    $('menu-button').addEventListener('click', () => this.toggleDrawer());
    $('scrim').addEventListener('click', () => this.toggleDrawer(false));
    $('token-form').addEventListener('submit', (event) => this.saveToken(event));
    $('token-cancel').addEventListener('click', () => $('token-dialog').close());
    $('token-dialog').addEventListener('cancel', (event) => {
      if (!this.api.token) event.preventDefault();
    });
  }

  async start() {
    this.startNew();
    this.loadModels();
    if (this.api.token) await this.refreshSessions();
    else this.askToken();
  }

  async loadModels() {
    try {
      const {data} = await this.api.models();
      this.models.setModels(data);
    } catch {
      this.models.unavailable();
    }
  }

  // --- The key ------------------------------------------------------------------------------

  askToken(message = '') {
    $('token').value = '';
    $('token-error').textContent = message;
    $('token-error').hidden = !message;
    $('token-cancel').hidden = !this.api.token;
    $('token-dialog').showModal();
  }

  async saveToken(event) {
    const token = $('token').value.trim();
    if (!token) {
      event.preventDefault();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    this.api = new Api(token);
    this.showTokenHint();
    this.startNew();
    // A message refused for its key is kept, to be sent with the new one.
    if (this.draft) $('message').value = this.draft;
    this.draft = '';
    await this.refreshSessions();
  }

  showTokenHint() {
    const {token} = this.api;
    $('token-hint').textContent = token ? `Key …${token.slice(-4)}` : 'No key';
  }

  // --- Sessions -----------------------------------------------------------------------------

  async refreshSessions() {
    this.showTokenHint();
    try {
      await this.sessions.refresh(this.api);
    } catch (error) {
      this.report(error);
    }
  }

  startNew() {
    if (this.streaming) this.stop();
    this.sessionId = null;
    this.stored = false;
    this.conversation.clear();
    this.sessions.setActive(null);
    $('title').textContent = 'New chat';
    $('system-box').hidden = false;
    this.toggleDrawer(false);
    $('message').focus();
  }

  async open(id) {
    if (this.streaming) this.stop();
    this.toggleDrawer(false);
    try {
      const session = await this.api.session(id);
      this.sessionId = id;
      this.stored = true;
      this.sessions.setActive(id);
      $('title').textContent = session.title || 'Untitled';
      $('system-box').hidden = true;
      $('system-box').open = false;
      this.conversation.show(session);
      if (session.model) this.models.select(session.model);
      $('message').focus();
    } catch (error) {
      this.report(error);
      if (error instanceof ApiError && error.status === 404) await this.refreshSessions();
    }
  }

  confirmDelete(summary) {
    const dialog = $('delete-dialog');
    const title = summary.title || 'Untitled';
    $('delete-text').textContent = `“${title}” and all its messages are removed from the server.`;
    dialog.returnValue = '';
    dialog.addEventListener(
      'close',
      () => {
        if (dialog.returnValue === 'delete') this.delete(summary.session_id);
      },
      {once: true},
    );
    dialog.showModal();
    $('delete-confirm').focus();
  }

  async delete(id) {
    try {
      await this.api.deleteSession(id);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        this.report(error);
        return;
      }
    }
    this.sessions.remove(id);
    this.announce('Conversation deleted.');
    if (id === this.sessionId) this.startNew();
  }

  // --- A turn -------------------------------------------------------------------------------

  async send(text) {
    const message = text.trim();
    if (!message || this.streaming) return;
    if (!this.api.token) {
      this.askToken();
      return;
    }
    $('message').value = '';
    // The page names new sessions itself, so even a stopped first answer can be reopened.
    this.sessionId ??= newSessionId();
    if (!this.stored) $('title').textContent = message;
    const question = this.conversation.addQuestion(message);
    await this.turn(message, question);
  }

  async turn(message, question) {
    const sessionId = this.sessionId;
    const body = {message, session_id: sessionId};
    if (this.models.value) body.model = this.models.value;
    const systemPrompt = $('system-prompt').value.trim();
    if (!this.stored && systemPrompt) body.system_prompt = systemPrompt;

    const answer = this.conversation.addAnswer();
    const controller = new AbortController();
    this.streaming = controller;
    this.setStreaming(true);
    this.conversation.scrollToEnd(true);
    // Whether the server holds this session after the turn.
    let saved = this.stored;
    try {
      const stream = this.api.chat(body, controller.signal);
      for (;;) {
        const {value, done} = await stream.next();
        if (done) {
          answer.done(value);
          saved = true;
          this.announce('Answer complete.');
          break;
        }
        answer.append(value.content);
        this.conversation.scrollToEnd();
      }
    } catch (error) {
      if (!(error instanceof ApiError) && !controller.signal.aborted) {
        answer.settle('error');
        throw error;
      }
      // A stopped or broken answer is saved with the text that had arrived, if any.
      saved ||= answer.text.length > 0 && (controller.signal.aborted || error.midStream);
      if (controller.signal.aborted) answer.stopped();
      else this.fail(answer, error, message, question);
    } finally {
      this.streaming = null;
      this.setStreaming(false);
    }
    this.conversation.scrollToEnd();
    if (!saved) return;
    // The user may have opened another conversation meanwhile.
    if (this.sessionId === sessionId) {
      this.stored = true;
      $('system-box').hidden = true;
    }
    await this.refreshSessions();
    this.sessions.ensure(sessionId, message);
    this.sessions.setActive(this.sessionId);
  }

  fail(answer, error, message, question) {
    const description = describeError(error);
    if (description.action === 'token') this.draft = message;
    if (!error.midStream) this.conversation.unsent(question);
    answer.failed(error, {
      retry: () => {
        // A turn that failed before its answer began left nothing on the server: send it again.
        if (!error.midStream) {
          question.remove();
          answer.element.remove();
        }
        this.send(message);
      },
      changeToken: () => this.askToken(description.text),
    });
    this.announce(description.title);
  }

  stop() {
    this.streaming?.abort();
  }

  setStreaming(on) {
    $('send').hidden = on;
    $('stop').hidden = !on;
    // The focus was on Stop, which is now hidden: it goes back to the message box.
    if (!on && (document.activeElement === $('stop') || document.activeElement === document.body)) {
      $('message').focus();
    }
  }

  // --- Around -------------------------------------------------------------------------------

  /** An error outside a turn (listing, opening, deleting) shown in the conversation. */
  report(error) {
    if (!(error instanceof ApiError)) throw error;
    const description = describeError(error);
    if (description.action === 'token') {
      this.askToken(description.text);
      return;
    }
    const answer = this.conversation.addAnswer();
    answer.failed(error, {retry: () => location.reload(), changeToken: () => this.askToken()});
    this.announce(description.title);
  }

  announce(text) {
    $('status').textContent = text;
  }

  toggleDrawer(force) {
    const wasOpen = document.body.classList.contains('drawer-open');
    const open = force ?? !wasOpen;
    document.body.classList.toggle('drawer-open', open);
    $('menu-button').setAttribute('aria-expanded', String(open));
    $('scrim').hidden = !open;
    // On a phone the drawer covers the page: the focus goes in with it and back out.
    if (open && !wasOpen) $('new-chat').focus();
    else if (wasOpen && !open && $('sidebar').contains(document.activeElement)) {
      $('menu-button').focus();
    }
  }
}

new ChatPage().start();
