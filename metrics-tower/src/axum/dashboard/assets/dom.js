// The one DOM helper: an element with properties (dataset included) and
// children (nodes or strings).
export function h(tag, props = {}, ...children) {
  const { dataset, ...rest } = props;
  const el = Object.assign(document.createElement(tag), rest);
  Object.assign(el.dataset, dataset);
  el.append(...children);
  return el;
}
