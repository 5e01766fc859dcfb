// The model picker: a search box over GET /models, as an ARIA combobox with a list of options.

import {element} from './dom.js';

const SHOWN = 100;
const DEFAULT_LABEL = 'Server default model';

function perMillion(price) {
  const value = Number(price);
  if (!Number.isFinite(value) || value < 0) return 'varies';
  if (value === 0) return 'free';
  const dollars = value * 1e6;
  return `$${dollars >= 10 ? dollars.toFixed(0) : Number(dollars.toPrecision(2))}/M`;
}

function contextSize(tokens) {
  if (!tokens) return '';
  return tokens >= 1e6 ? `${Number((tokens / 1e6).toFixed(1))}M ctx` : `${Math.round(tokens / 1e3)}K ctx`;
}

/** "in $3/M · out $15/M · 200K ctx" */
function modelFacts(model) {
  const pricing = model.pricing ?? {};
  const prices =
    pricing.prompt === undefined
      ? []
      : [`in ${perMillion(pricing.prompt)}`, `out ${perMillion(pricing.completion)}`];
  return [...prices, contextSize(model.context_length)].filter(Boolean).join(' · ');
}

export class ModelPicker {
  /** `onChange(id)` is called with the chosen id, or null for the server's default. */
  constructor({input, list, onChange}) {
    this.input = input;
    this.list = list;
    this.onChange = onChange;
    this.models = [];
    this.byId = new Map();
    this.value = null;
    this.options = [];
    this.active = -1;
    input.addEventListener('focus', () => {
      input.select();
      this.open();
    });
    input.addEventListener('input', () => this.open());
    input.addEventListener('keydown', (event) => this.key(event));
    input.addEventListener('blur', () => this.close());
    // Keep the focus in the input while an option is clicked.
    list.addEventListener('mousedown', (event) => event.preventDefault());
    this.showValue();
  }

  setModels(models) {
    this.models = models;
    this.byId = new Map(models.map((model) => [model.id, model]));
    // The list may arrive while someone is already searching: their query stays.
    if (this.list.hidden) this.showValue();
    else this.open();
  }

  unavailable() {
    this.input.placeholder = 'Model list unavailable';
  }

  /** Shows `id` as chosen without calling onChange (an opened session's model). */
  select(id) {
    this.value = id;
    this.showValue();
  }

  label(id) {
    if (id === null) return DEFAULT_LABEL;
    return this.byId.get(id)?.name ?? id;
  }

  showValue() {
    this.input.value = this.label(this.value);
    this.input.title = this.value ?? DEFAULT_LABEL;
  }

  matches(query) {
    const terms = query.toLowerCase().split(/\s+/).filter(Boolean);
    const found = this.models.filter((model) => {
      const haystack = `${model.id} ${model.name ?? ''}`.toLowerCase();
      return terms.every((term) => haystack.includes(term));
    });
    const choices = found.slice(0, SHOWN).map((model) => ({id: model.id, model}));
    if (!terms.length || terms.every((term) => 'server default'.includes(term))) {
      choices.unshift({id: null, model: null});
    }
    return {choices, more: found.length - Math.min(found.length, SHOWN)};
  }

  open() {
    // While the field shows the current choice, every model is offered.
    const query = this.input.value === this.label(this.value) ? '' : this.input.value;
    const {choices, more} = this.matches(query);
    this.options = choices;
    const items = choices.map((choice, index) => this.option(choice, index));
    if (more > 0) items.push(this.hint(`${more} more: type to narrow down`));
    if (!choices.length) items.push(this.hint('No model matches.'));
    this.list.replaceChildren(...items);
    this.list.hidden = false;
    this.input.setAttribute('aria-expanded', 'true');
    const current = choices.findIndex((choice) => choice.id === this.value);
    this.highlight(query || current < 0 ? 0 : current);
  }

  hint(text) {
    const item = element('li', null, 'model-more', text);
    item.setAttribute('role', 'presentation');
    return item;
  }

  option(choice, index) {
    const item = element('li', null, 'model-option');
    item.id = `model-option-${index}`;
    item.setAttribute('role', 'option');
    item.setAttribute('aria-selected', String(choice.id === this.value));
    const {model} = choice;
    element('span', item, 'model-name', model ? (model.name ?? model.id) : DEFAULT_LABEL);
    const facts = model
      ? [model.id, modelFacts(model)].filter(Boolean).join(' · ')
      : 'whatever OPENROUTER_DEFAULT_MODEL names';
    element('span', item, 'model-facts', facts);
    item.addEventListener('click', () => this.pick(index));
    return item;
  }

  highlight(index) {
    const items = this.list.querySelectorAll('[role="option"]');
    if (!items.length) {
      this.active = -1;
      this.input.removeAttribute('aria-activedescendant');
      return;
    }
    this.active = (index + items.length) % items.length;
    items.forEach((item, position) => item.classList.toggle('active', position === this.active));
    const item = items[this.active];
    this.input.setAttribute('aria-activedescendant', item.id);
    item.scrollIntoView({block: 'nearest'});
  }

  pick(index) {
    const choice = this.options[index];
    if (!choice) return;
    this.value = choice.id;
    this.close();
    this.onChange(choice.id);
  }

  close() {
    this.list.hidden = true;
    this.input.setAttribute('aria-expanded', 'false');
    this.input.removeAttribute('aria-activedescendant');
    this.showValue();
  }

  key(event) {
    const openList = !this.list.hidden;
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      if (!openList) this.open();
      else this.highlight(this.active + (event.key === 'ArrowDown' ? 1 : -1));
    } else if (event.key === 'Enter' && openList) {
      event.preventDefault();
      this.pick(this.active);
    } else if (event.key === 'Escape' && openList) {
      event.preventDefault();
      event.stopPropagation();
      this.close();
      this.input.select();
    }
  }
}
