// Numbers, money and times as the page shows them.

const usd = new Intl.NumberFormat('en-US', {
  style: 'currency',
  currency: 'USD',
  maximumSignificantDigits: 2,
});
const relative = new Intl.RelativeTimeFormat('en', {numeric: 'auto'});
const count = new Intl.NumberFormat('en-US');

/** A cost in USD: "$0.00053", "$1.2"; fractions of a millionth of a dollar read as "< $0.000001". */
export function formatCost(cost) {
  if (cost === 0) return '$0';
  if (cost < 0.000001) return '< $0.000001';
  return usd.format(cost);
}

export function formatCount(value) {
  return count.format(value);
}

/** The line under an answer: model, tokens in and out, cost. */
export function turnSummary({model, usage, tokens}) {
  const parts = [];
  if (model) parts.push(model);
  if (usage) {
    parts.push(
      `${formatCount(usage.prompt_tokens)} in + ${formatCount(usage.completion_tokens)} out = ` +
        `${formatCount(usage.total_tokens)} tokens`,
    );
    if (typeof usage.cost === 'number') parts.push(formatCost(usage.cost));
  } else if (typeof tokens === 'number') {
    parts.push(`${formatCount(tokens)} tokens`);
  }
  return parts.join(' · ');
}

/** "just now", "5 minutes ago", "yesterday", or the date when older than a week. */
export function ago(isoTime) {
  const seconds = Math.round((Date.parse(isoTime) - Date.now()) / 1000);
  const steps = [
    [60, 'second'],
    [3600, 'minute', 60],
    [86400, 'hour', 3600],
    [604800, 'day', 86400],
  ];
  if (Math.abs(seconds) < 45) return 'just now';
  for (const [limit, unit, size = 1] of steps) {
    if (Math.abs(seconds) < limit) return relative.format(Math.round(seconds / size), unit);
  }
  return new Date(isoTime).toLocaleDateString();
}
