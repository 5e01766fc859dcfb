// Building the page's elements: text only ever goes in through textContent.

/** A new `tag` element with `className` and `text`, appended to `parent` when one is given. */
export function element(tag, parent, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  parent?.append(node);
  return node;
}
