// The side list of the caller's sessions (GET /sessions): open one, delete one, page on.

import {sessionTotals} from './conversation.js';
import {element} from './dom.js';
import {ago} from './format.js';

const PAGE = 50;

export class SessionList {
  /** `onOpen(id)` and `onDelete(summary)` are called when the user picks or deletes one. */
  constructor({list, note, more, onOpen, onDelete}) {
    this.list = list;
    this.note = note;
    this.more = more;
    this.onOpen = onOpen;
    this.onDelete = onDelete;
    this.sessions = [];
    this.activeId = null;
    this.nextOffset = null;
    more.addEventListener('click', () => this.loadMore());
  }

  /** The first page again (after a turn, a delete, a new key). */
  async refresh(api) {
    this.api = api;
    const page = await api.sessions(0, PAGE);
    this.sessions = page.sessions;
    this.nextOffset = page.next_offset;
    this.render();
  }

  async loadMore() {
    if (this.nextOffset === null) return;
    const page = await this.api.sessions(this.nextOffset, PAGE);
    const known = new Set(this.sessions.map((session) => session.session_id));
    this.sessions.push(...page.sessions.filter((session) => !known.has(session.session_id)));
    this.nextOffset = page.next_offset;
    this.render();
  }

  setActive(id) {
    this.activeId = id;
    for (const item of this.list.children) {
      const open = item.querySelector('.session-open');
      if (item.dataset.sessionId === id) open.setAttribute('aria-current', 'page');
      else open.removeAttribute('aria-current');
    }
  }

  /**
   * Lists a session the page knows the server is saving: a stopped answer is committed
   * moments after the page hangs up, so a listing made at once may not have it yet.
   */
  ensure(id, title) {
    if (this.sessions.some((session) => session.session_id === id)) return;
    const now = new Date().toISOString();
    this.sessions.unshift({session_id: id, title, updated_at: now, usage: null});
    this.render();
  }

  remove(id) {
    this.sessions = this.sessions.filter((session) => session.session_id !== id);
    this.render();
  }

  render() {
    const items = this.sessions.map((session) => this.item(session));
    this.list.replaceChildren(...items);
    this.note.hidden = this.sessions.length > 0;
    this.more.hidden = this.nextOffset === null;
    this.setActive(this.activeId);
  }

  item(session) {
    const title = session.title || 'Untitled';
    const item = element('li', null, 'session');
    item.dataset.sessionId = session.session_id;

    const open = element('button', item, 'session-open');
    open.type = 'button';
    element('span', open, 'session-title', title);
    const totals = sessionTotals(session.usage);
    const detail = [ago(session.updated_at), totals.short].filter(Boolean).join(' · ');
    element('span', open, 'session-detail', detail);
    if (totals.full) open.title = totals.full;
    open.addEventListener('click', () => this.onOpen(session.session_id));

    const remove = element('button', item, 'icon-button session-delete');
    remove.type = 'button';
    remove.setAttribute('aria-label', `Delete “${title}”`);
    remove.title = 'Delete';
    remove.addEventListener('click', () => this.onDelete(session));
    return item;
  }
}
