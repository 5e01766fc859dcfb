// Markdown to DOM nodes, for text a model wrote. Text enters the page only as text nodes and
// links only through a scheme allow-list, so an answer can be formatted but can never add
// HTML, run a script, load an image or link to a javascript: URL. No innerHTML anywhere.

import {element} from './dom.js';

const SAFE_SCHEMES = new Set(['http:', 'https:', 'mailto:']);

const FENCE = /^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
const TABLE_DELIMITER = /^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$/;

const INLINE = new RegExp(
  [
    /(?<tick>`+)(?<code>[\s\S]*?[^`])\k<tick>(?!`)/,
    /\\(?<escaped>[!-/:-@[-`{-~])/,
    /<(?<autolink>(?:https?:\/\/|mailto:)[^\s<>]+)>/,
    /(?<bang>!?)\[(?<label>(?:[^[\]]|\[[^[\]]*\])*)\]\((?<href>[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:[ \t]+"[^"]*")?\)/,
    /\*\*(?<strong>(?=\S)[\s\S]*?\S)\*\*/,
    /(?<!\w)__(?<strongU>(?=\S)[\s\S]*?\S)__(?!\w)/,
    /~~(?<strike>(?=\S)[\s\S]*?\S)~~/,
    /\*(?<em>(?=[^\s*])[\s\S]*?[^\s*])\*(?!\*)/,
    /(?<!\w)_(?<emU>(?=\S)[\s\S]*?\S)_(?!\w)/,
    /(?<bare>https?:\/\/[^\s<>"]*[^\s<>"'.,:;!?)\]}*_~])/,
  ]
    .map((pattern) => pattern.source)
    .join('|'),
  'g',
);

/** The URL if it is absolute and http(s) or mailto, else null. */
function safeUrl(raw) {
  let url;
  try {
    url = new URL(raw.trim());
  } catch {
    return null;
  }
  return SAFE_SCHEMES.has(url.protocol) ? url.href : null;
}

/** A DocumentFragment holding `text` rendered as Markdown. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  renderBlocks(text.replace(/\r\n?/g, '\n').split('\n'), fragment);
  return fragment;
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function startsBlock(lines, index) {
  const line = lines[index];
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    LIST_ITEM.test(line) ||
    startsTable(lines, index)
  );
}

function startsTable(lines, index) {
  return (
    index + 1 < lines.length &&
    lines[index].includes('|') &&
    lines[index + 1].includes('-') &&
    TABLE_DELIMITER.test(lines[index + 1])
  );
}

function renderBlocks(lines, parent) {
  let index = 0;
  while (index < lines.length) {
    const line = lines[index];
    if (!line.trim()) {
      index += 1;
    } else if (FENCE.test(line)) {
      index = codeBlock(lines, index, parent);
    } else if (HEADING.test(line)) {
      const [, hashes, content] = HEADING.exec(line);
      renderInline(content, element(`h${hashes.length}`, parent));
      index += 1;
    } else if (RULE.test(line)) {
      element('hr', parent);
      index += 1;
    } else if (QUOTE.test(line)) {
      index = blockquote(lines, index, parent);
    } else if (LIST_ITEM.test(line)) {
      index = list(lines, index, parent);
    } else if (startsTable(lines, index)) {
      index = table(lines, index, parent);
    } else {
      index = paragraph(lines, index, parent);
    }
  }
}

function codeBlock(lines, start, parent) {
  const [, indent, fence, language] = FENCE.exec(lines[start]);
  const closing = new RegExp(`^ {0,3}${fence[0] === '`' ? '`' : '~'}{${fence.length},}[ \\t]*$`);
  const body = [];
  let index = start + 1;
  // An unclosed fence runs to the end: a streaming answer shows its code as code at once.
  while (index < lines.length && !closing.test(lines[index])) {
    const line = lines[index];
    body.push(line.slice(Math.min(indent.length, indentOf(line))));
    index += 1;
  }
  const block = element('div', parent, 'code-block');
  if (language) element('span', block, 'code-language').textContent = language;
  const code = element('code', element('pre', block));
  code.textContent = body.join('\n');
  return index + 1;
}

function blockquote(lines, start, parent) {
  const body = [];
  let index = start;
  while (index < lines.length && lines[index].trim()) {
    const line = lines[index];
    if (QUOTE.test(line)) body.push(line.replace(QUOTE, ''));
    else if (startsBlock(lines, index)) break;
    else body.push(line);
    index += 1;
  }
  renderBlocks(body, element('blockquote', parent));
  return index;
}

function list(lines, start, parent) {
  const [, indent, marker] = LIST_ITEM.exec(lines[start]);
  const ordered = /\d/.test(marker);
  const listElement = element(ordered ? 'ol' : 'ul', parent);
  if (ordered && Number.parseInt(marker, 10) !== 1) listElement.start = Number.parseInt(marker, 10);
  const items = [];
  let loose = false;
  let index = start;
  while (index < lines.length) {
    const item = LIST_ITEM.exec(lines[index]);
    if (!item || item[1].length !== indent.length || /\d/.test(item[2]) !== ordered) break;
    const contentIndent = item[0].length - item[3].length;
    const body = [item[3]];
    index += 1;
    while (index < lines.length) {
      const line = lines[index];
      if (!line.trim()) {
        let next = index + 1;
        while (next < lines.length && !lines[next].trim()) next += 1;
        if (next >= lines.length) break;
        const following = lines[next];
        const sibling = LIST_ITEM.exec(following);
        if (indentOf(following) > indent.length) {
          body.push(...lines.slice(index, next).map(() => ''));
          loose = loose || !sibling;
          index = next;
          continue;
        }
        if (sibling && sibling[1].length === indent.length && /\d/.test(sibling[2]) === ordered) {
          loose = true;
        }
        index = next;
        break;
      }
      if (indentOf(line) > indent.length) {
        body.push(line.slice(Math.min(indentOf(line), contentIndent)));
      } else if (startsBlock(lines, index)) {
        break;
      } else {
        body.push(line.trim());
      }
      index += 1;
    }
    items.push(body);
    if (index < lines.length && !lines[index].trim()) break;
  }
  for (const body of items) {
    const listItem = element('li', listElement);
    renderBlocks(body, listItem);
    if (!loose) {
      for (const child of [...listItem.children]) {
        if (child.tagName === 'P') child.replaceWith(...child.childNodes);
      }
    }
  }
  return index;
}

function tableCells(line) {
  let row = line.trim();
  if (row.startsWith('|')) row = row.slice(1);
  if (row.endsWith('|') && !row.endsWith('\\|')) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replaceAll('\\|', '|'));
}

function table(lines, start, parent) {
  const alignments = tableCells(lines[start + 1]).map((cell) => {
    if (cell.startsWith(':') && cell.endsWith(':')) return 'align-center';
    if (cell.endsWith(':')) return 'align-right';
    return '';
  });
  const wrap = element('div', parent, 'table-wrap');
  const tableElement = element('table', wrap);
  const addRow = (section, cells, tag) => {
    const row = element('tr', section);
    alignments.forEach((alignment, column) => {
      renderInline(cells[column] ?? '', element(tag, row, alignment));
    });
  };
  addRow(element('thead', tableElement), tableCells(lines[start]), 'th');
  const body = element('tbody', tableElement);
  let index = start + 2;
  while (index < lines.length && lines[index].trim() && lines[index].includes('|')) {
    addRow(body, tableCells(lines[index]), 'td');
    index += 1;
  }
  return index;
}

function paragraph(lines, start, parent) {
  const body = [lines[start].trim()];
  let index = start + 1;
  while (index < lines.length && lines[index].trim() && !startsBlock(lines, index)) {
    body.push(lines[index].trim());
    index += 1;
  }
  renderInline(body.join('\n'), element('p', parent));
  return index;
}

/** Text with line breaks kept, as chat answers mean them. */
function appendText(parent, text) {
  text.split('\n').forEach((part, index) => {
    if (index) element('br', parent);
    if (part) parent.append(document.createTextNode(part));
  });
}

function appendLink(parent, href, label, raw, inLink) {
  const url = safeUrl(href);
  if (inLink) {
    appendText(parent, raw);
    return;
  }
  // Not a link we will make: the label stays, as plain text.
  const target = url === null ? element('span', parent, 'unsafe-link') : element('a', parent);
  if (url !== null) {
    target.href = url;
    target.target = '_blank';
    target.rel = 'noopener noreferrer nofollow';
  }
  // A URL shown as itself is text as written: its underscores are not emphasis.
  if (label) renderInline(label, target, true);
  else appendText(target, href);
}

/** Inline Markdown of `text` into `parent`; inside a link (`inLink`) no other link is made. */
function renderInline(text, parent, inLink = false) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    appendText(parent, text.slice(last, match.index));
    last = match.index + match[0].length;
    const group = match.groups;
    if (group.code !== undefined) {
      element('code', parent).textContent = group.code.replaceAll('\n', ' ');
    } else if (group.escaped !== undefined) {
      parent.append(document.createTextNode(group.escaped));
    } else if (group.autolink !== undefined) {
      appendLink(parent, group.autolink, '', match[0], inLink);
    } else if (group.label !== undefined) {
      // An image becomes a link to it: nothing is loaded from a model's answer.
      const label = group.bang ? `Image: ${group.label || group.href}` : group.label;
      appendLink(parent, group.href, label, match[0], inLink);
    } else if (group.strong !== undefined || group.strongU !== undefined) {
      renderInline(group.strong ?? group.strongU, element('strong', parent), inLink);
    } else if (group.strike !== undefined) {
      renderInline(group.strike, element('del', parent), inLink);
    } else if (group.em !== undefined || group.emU !== undefined) {
      renderInline(group.em ?? group.emU, element('em', parent), inLink);
    } else {
      appendLink(parent, group.bare, '', match[0], inLink);
    }
  }
  appendText(parent, text.slice(last));
}
