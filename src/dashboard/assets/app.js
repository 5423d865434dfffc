// The dashboard page: plain JavaScript, no framework, no network but the dashboard itself.
// Routes live in the URL's fragment (#/, #/search?..., #/message?...), so every view can be
// bookmarked. Text from the queue is only ever set as textContent, never parsed as HTML.

const STATES = ['waiting', 'scheduled', 'in-flight', 'handled', 'dead'];
const SEARCH_FIELDS = ['topic', 'group', 'state', 'id', 'key', 'header', 'since', 'before'];
const PAGE_SIZE = 25;

const view = document.getElementById('view');
const operatorInput = document.getElementById('operator');
let overview = null;
let events = null;

// ---- small helpers -------------------------------------------------------------------------

/** Makes an element: h('td', { class: 'num' }, 'text', child, ...). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name.startsWith('on')) {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null && child !== false) {
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return element;
}

function number(value) {
  return Number(value).toLocaleString('en-US');
}

function age(seconds) {
  if (!seconds) {
    return '–';
  }
  if (seconds < 90) {
    return `${Math.round(seconds)} s`;
  }
  if (seconds < 5400) {
    return `${Math.round(seconds / 60)} min`;
  }
  if (seconds < 172800) {
    return `${Math.round(seconds / 3600)} h`;
  }
  return `${Math.round(seconds / 86400)} d`;
}

function time(iso) {
  return new Date(iso).toLocaleString();
}

function toast(text) {
  const box = document.getElementById('toast');
  box.textContent = text;
  box.classList.add('shown');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove('shown'), 3500);
}

function hashParams() {
  const hash = location.hash.slice(1) || '/';
  const [path, query = ''] = hash.split('?');
  return { path, params: new URLSearchParams(query) };
}

function go(path, params) {
  const query = params ? `?${new URLSearchParams(params)}` : '';
  location.hash = `#${path}${query}`;
}

async function getJson(path, params) {
  const query = params ? `?${new URLSearchParams(params)}` : '';
  const response = await fetch(`${path}${query}`, { headers: { Accept: 'application/json' } });
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body.error ?? `${response.status}`);
  }
  return body;
}

/** An action: a POST with the action header and the operator's name, after confirmation. */
async function act(question, path, body) {
  if (!(await confirmAction(question))) {
    return undefined;
  }
  const response = await fetch(`/api/actions/${path}`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'X-Mailbus-Action': '1',
      'X-Mailbus-Operator': operatorInput.value.trim(),
    },
    body: JSON.stringify(body),
  });
  const result = await response.json();
  if (!response.ok) {
    toast(`Failed: ${result.error}`);
    return undefined;
  }
  return result;
}

function confirmAction(question) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = question;
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

function stateBadge(state) {
  const kind = state === 'dead' ? 'dead' : state === 'handled' ? 'handled' : '';
  return h('span', { class: `badge ${kind}` }, state);
}

function failure(error) {
  view.replaceChildren(h('div', { class: 'panel error-text' }, `Could not load: ${error.message}`));
}

// ---- overview ------------------------------------------------------------------------------

async function showOverview() {
  const body = await getJson('/api/overview');
  overview = body;
  renderOverview();
  listen();
}

/** Live updates: each sample the server reads arrives as a server-sent event. */
function listen() {
  if (events) {
    return;
  }
  events = new EventSource('/api/events');
  events.addEventListener('sample', (event) => {
    const sample = JSON.parse(event.data);
    if (!overview) {
      return;
    }
    overview.sample = sample;
    overview.history.push({
      at: sample.at,
      arrived: sample.arrived,
      handled: sample.handled,
      dead: sample.dead,
    });
    const hourAgo = sample.at - 3600000;
    overview.history = overview.history.filter((point) => point.at >= hourAgo);
    if (hashParams().path === '/') {
      renderOverview();
    }
  });
}

function totals(groups) {
  const sum = (field) => groups.reduce((total, group) => total + group[field], 0);
  return {
    waiting: sum('waiting'),
    scheduled: sum('scheduled'),
    inFlight: sum('inFlight'),
    handled: sum('handled'),
    dead: sum('dead'),
    consumers: sum('consumers'),
  };
}

function renderOverview() {
  const sample = overview.sample ?? { groups: [], paused: [] };
  const groups = sample.groups;
  const all = totals(groups);
  const card = (label, value, kind = '') =>
    h(
      'div',
      { class: `card ${kind}`, 'data-total': label },
      h('div', { class: 'muted' }, label),
      h('div', { class: 'value' }, number(value)),
    );

  const rows = groups.map((group) => {
    const name = `${group.topic}/${group.group}`;
    const paused = sample.paused.includes(name);
    const where = { topic: group.topic, group: group.group };
    const searchLink = (state, value) =>
      h('a', { href: `#/search?${new URLSearchParams({ ...where, state })}` }, number(value));
    return h(
      'tr',
      { 'data-group': name },
      h('td', {}, group.topic),
      h('td', {}, group.group, paused ? [' ', h('span', { class: 'badge paused' }, 'paused')] : []),
      h('td', { class: 'num', 'data-count': 'waiting' }, searchLink('waiting', group.waiting)),
      h(
        'td',
        { class: 'num', 'data-count': 'scheduled' },
        searchLink('scheduled', group.scheduled),
      ),
      h('td', { class: 'num', 'data-count': 'in-flight' }, searchLink('in-flight', group.inFlight)),
      h('td', { class: 'num', 'data-count': 'handled' }, searchLink('handled', group.handled)),
      h('td', { class: 'num', 'data-count': 'dead' }, searchLink('dead', group.dead)),
      h('td', { class: 'num' }, age(group.oldestWaitingSeconds)),
      h(
        'td',
        { class: 'num', 'data-count': 'consumers', title: 'heartbeat in the last 5 minutes' },
        number(group.consumers),
      ),
      h(
        'td',
        {},
        h(
          'div',
          { class: 'actions' },
          h(
            'button',
            {
              class: 'secondary',
              'data-action': paused ? 'resume' : 'pause',
              onclick: async () => {
                const verb = paused ? 'Resume' : 'Pause';
                const done = await act(`${verb} ${name}?`, 'pause', { ...where, paused: !paused });
                if (done) {
                  toast(`${name} ${done.paused ? 'paused' : 'resumed'}`);
                  showOverview().catch(failure);
                }
              },
            },
            paused ? 'Resume' : 'Pause',
          ),
          h(
            'button',
            {
              'data-action': 'replay-all',
              disabled: group.dead === 0,
              onclick: async () => {
                const question = `Replay all ${group.dead} dead letters of ${name}?`;
                const done = await act(question, 'replay', { ...where, all: true });
                if (done) {
                  toast(`Replayed ${done.replayed} dead letters`);
                  showOverview().catch(failure);
                }
              },
            },
            'Replay dead',
          ),
          h(
            'button',
            {
              class: 'danger',
              'data-action': 'purge',
              disabled: group.dead === 0,
              onclick: async () => {
                const question = `Delete all ${group.dead} dead letters of ${name}? This cannot be undone.`;
                const done = await act(question, 'purge', where);
                if (done) {
                  toast(`Deleted ${done.purged} dead letters`);
                  showOverview().catch(failure);
                }
              },
            },
            'Purge dead',
          ),
        ),
      ),
    );
  });

  const table = h(
    'table',
    { id: 'groups' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', {}, 'Topic'),
        h('th', {}, 'Group'),
        h('th', { class: 'num' }, 'Waiting'),
        h('th', { class: 'num' }, 'Scheduled'),
        h('th', { class: 'num' }, 'In flight'),
        h('th', { class: 'num' }, 'Handled'),
        h('th', { class: 'num' }, 'Dead'),
        h('th', { class: 'num' }, 'Oldest waiting'),
        h('th', { class: 'num', title: 'heartbeat in the last 5 minutes' }, 'Consumers seen'),
        h('th', {}, 'Actions'),
      ),
    ),
    h('tbody', {}, rows),
  );

  const actions = overview.actions.map((record) =>
    h(
      'li',
      {},
      `${time(record.at)}: ${record.action} ${record.topic}/${record.group} (${record.count}) by ${record.by}`,
    ),
  );

  view.replaceChildren(
    h('h1', {}, 'Overview'),
    h(
      'p',
      { class: 'muted' },
      `${overview.kind} queue at `,
      h('span', { class: 'mono' }, overview.location),
    ),
    h(
      'div',
      { class: 'cards' },
      card('waiting', all.waiting),
      card('scheduled', all.scheduled),
      card('in flight', all.inFlight),
      card('handled', all.handled),
      card('dead', all.dead, 'dead'),
      card('consumers seen', all.consumers),
    ),
    h(
      'section',
      { class: 'panel chart' },
      h('h2', {}, 'Throughput, last hour (messages per second)'),
      chart(overview.history),
    ),
    h(
      'section',
      { class: 'panel' },
      h('h2', {}, 'Topics and groups'),
      groups.length === 0
        ? h('p', { class: 'muted' }, 'No topics yet.')
        : h('div', { class: 'scroll' }, table),
    ),
    actions.length === 0
      ? ''
      : h('section', { class: 'panel' }, h('h2', {}, 'Recent actions'), h('ul', {}, actions)),
  );
}

/** An SVG line chart of the three rates. */
function chart(history) {
  const svgNs = 'http://www.w3.org/2000/svg';
  const width = 600;
  const height = 180;
  const svg = document.createElementNS(svgNs, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'throughput chart');
  const now = Date.now();
  const start = now - 3600000;
  const peak = Math.max(
    1,
    ...history.flatMap((point) => [point.arrived, point.handled, point.dead]),
  );
  const axis = document.createElementNS(svgNs, 'line');
  for (const [name, value] of Object.entries({
    x1: 0,
    y1: height - 1,
    x2: width,
    y2: height - 1,
    class: 'axis',
  })) {
    axis.setAttribute(name, String(value));
  }
  svg.append(axis);
  for (const series of ['arrived', 'handled', 'dead']) {
    const line = document.createElementNS(svgNs, 'polyline');
    const points = history.map((point) => {
      const x = ((point.at - start) / 3600000) * width;
      const y = height - 4 - (point[series] / peak) * (height - 12);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    line.setAttribute('points', points.join(' '));
    line.setAttribute('class', series);
    svg.append(line);
  }
  const last = history.at(-1) ?? { arrived: 0, handled: 0, dead: 0 };
  const legend = h(
    'div',
    { class: 'legend' },
    h('span', { class: 'arrived' }, `arrived ${last.arrived.toFixed(1)}/s`),
    h('span', { class: 'handled' }, `handled ${last.handled.toFixed(1)}/s`),
    h('span', { class: 'dead' }, `dead ${last.dead.toFixed(1)}/s`),
    h('span', {}, `peak ${peak.toFixed(1)}/s`),
  );
  return h('div', {}, svg, legend);
}

// ---- search --------------------------------------------------------------------------------

/** Reads the search bar: `field:value` words are fields, the rest is free text. */
function parseSearchBar(text) {
  const params = new URLSearchParams();
  const words = [];
  for (const word of text.match(/(?:[^\s"]+|"[^"]*")+/g) ?? []) {
    const match = /^([a-z]+):(.+)$/i.exec(word);
    const field = match?.[1].toLowerCase();
    if (match && SEARCH_FIELDS.includes(field)) {
      params.set(field, match[2].replace(/^"|"$/g, ''));
    } else {
      words.push(word.replace(/^"|"$/g, ''));
    }
  }
  if (words.length > 0) {
    params.set('text', words.join(' '));
  }
  return params;
}

async function showSearch(params) {
  const offset = Number(params.get('offset') ?? 0);
  const query = Object.fromEntries([...params].filter(([, value]) => value !== ''));
  // The time fields are in the browser's time zone; the server is told the exact instant.
  for (const name of ['since', 'before']) {
    if (query[name] !== undefined && !Number.isNaN(new Date(query[name]).getTime())) {
      query[name] = new Date(query[name]).toISOString();
    }
  }
  const form = searchForm(params);
  view.replaceChildren(h('h1', {}, 'Search'), form, h('p', { class: 'muted' }, 'Searching…'));
  const result = await getJson('/api/search', { ...query, offset, limit: PAGE_SIZE });
  const selected = new Set();

  const deadOnly = params.get('state') === 'dead' && params.get('topic') && params.get('group');
  const rows = result.hits.map((hit) => {
    const link = `#/message?${new URLSearchParams({ topic: hit.topic, group: hit.group, state: hit.state, id: hit.id })}`;
    return h(
      'tr',
      { 'data-id': hit.id },
      deadOnly
        ? h(
            'td',
            {},
            h('input', {
              type: 'checkbox',
              'aria-label': `select ${hit.id}`,
              onchange: (event) =>
                event.target.checked ? selected.add(hit.id) : selected.delete(hit.id),
            }),
          )
        : '',
      h('td', { class: 'mono' }, h('a', { href: link }, hit.id)),
      h('td', {}, `${hit.topic}/${hit.group}`),
      h('td', {}, stateBadge(hit.state)),
      h('td', {}, hit.key ?? ''),
      h('td', { class: 'num' }, hit.attempts),
      h('td', {}, time(hit.storedAt)),
      h('td', { class: 'wrap mono' }, hit.preview),
    );
  });

  const page = (delta) => {
    const next = new URLSearchParams(params);
    next.set('offset', String(Math.max(0, offset + delta)));
    go('/search', next);
  };
  const from = result.total === 0 ? 0 : offset + 1;
  const to = offset + result.hits.length;
  const replaySelected = deadOnly
    ? h(
        'button',
        {
          id: 'replay-selected',
          onclick: async () => {
            if (selected.size === 0) {
              toast('Select dead letters first');
              return;
            }
            const where = { topic: params.get('topic'), group: params.get('group') };
            const done = await act(`Replay ${selected.size} dead letters?`, 'replay', {
              ...where,
              ids: [...selected],
            });
            if (done) {
              toast(`Replayed ${done.replayed} dead letters`);
              showSearch(params).catch(failure);
            }
          },
        },
        'Replay selected',
      )
    : '';

  view.replaceChildren(
    h('h1', {}, 'Search'),
    form,
    h(
      'section',
      { class: 'panel' },
      h(
        'p',
        { id: 'search-total' },
        result.total === 1 ? '1 message matches' : `${number(result.total)} messages match`,
        result.total > 0 ? `; ${from}–${to} shown, newest first` : '',
      ),
      result.hits.length === 0
        ? ''
        : h(
            'div',
            { class: 'scroll' },
            h(
              'table',
              { id: 'results' },
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  deadOnly ? h('th', {}, '') : '',
                  h('th', {}, 'Id'),
                  h('th', {}, 'Group'),
                  h('th', {}, 'State'),
                  h('th', {}, 'Key'),
                  h('th', { class: 'num' }, 'Attempts'),
                  h('th', {}, 'Stored'),
                  h('th', {}, 'Payload'),
                ),
              ),
              h('tbody', {}, rows),
            ),
          ),
      h(
        'div',
        { class: 'pager' },
        h(
          'button',
          { class: 'secondary', disabled: offset === 0, onclick: () => page(-PAGE_SIZE) },
          'Newer',
        ),
        h(
          'button',
          { class: 'secondary', disabled: to >= result.total, onclick: () => page(PAGE_SIZE) },
          'Older',
        ),
        replaySelected,
      ),
    ),
  );
}

/**
 * A time field: a datetime-local input in the browser's zone, which cannot hold the zone of an
 * ISO time. A value it cannot show stays as typed, in a text input, so that the search keeps it
 * (and the server says what is wrong with it).
 */
function timeInput(name, value) {
  const date = value ? new Date(value) : undefined;
  if (date !== undefined && Number.isNaN(date.getTime())) {
    return h('input', { name, value });
  }
  const local =
    date === undefined
      ? ''
      : new Date(date.getTime() - date.getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
  return h('input', { name, value: local, type: 'datetime-local', step: 1 });
}

/** A time field's value for the URL: an ISO time in UTC, or what was typed. */
function timeParam(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toISOString();
}

function searchForm(params) {
  const field = (name, label, attributes = {}) =>
    h('label', {}, label, h('input', { name, value: params.get(name) ?? '', ...attributes }));
  const timeField = (name, label) => h('label', {}, label, timeInput(name, params.get(name)));
  const stateSelect = h(
    'select',
    { name: 'state' },
    h('option', { value: '' }, 'any state'),
    STATES.map((state) =>
      h('option', { value: state, selected: params.get('state') === state }, state),
    ),
  );
  return h(
    'form',
    {
      id: 'search-form',
      class: 'panel form-grid',
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        const next = new URLSearchParams();
        for (const [name, value] of data) {
          const text = String(value).trim();
          if (text !== '') {
            next.set(name, name === 'since' || name === 'before' ? timeParam(text) : text);
          }
        }
        go('/search', next);
      },
    },
    field('topic', 'Topic'),
    field('group', 'Group'),
    h('label', {}, 'State', stateSelect),
    field('id', 'Id'),
    field('key', 'Key'),
    field('header', 'Header (Name: value)'),
    field('text', 'Text in the payload'),
    timeField('since', 'Stored since'),
    timeField('before', 'Stored before'),
    h('button', { type: 'submit' }, 'Search'),
  );
}

// ---- one message ---------------------------------------------------------------------------

async function showMessage(params) {
  const where = Object.fromEntries(params);
  const { message, thread, consumers } = await getJson('/api/message', where);
  const facts = [
    ['Id', message.id],
    ['Topic / group', `${message.topic}/${message.group}`],
    ['State', stateBadge(message.state)],
    ['Stored', time(message.storedAt)],
    ['Location', h('span', { class: 'mono' }, message.location)],
    ['Key', message.key ?? '–'],
    ['Priority', message.priority],
    ['Attempts', String(message.attempts)],
    ['Last error', message.lastError ? h('span', { class: 'error-text' }, message.lastError) : '–'],
  ];
  if (message.undecodable) {
    facts.push(['Not decoded', message.undecodable]);
  }

  const headerRows = Object.entries(message.headers).map(([name, value]) =>
    h('tr', {}, h('td', { class: 'mono' }, name), h('td', { class: 'wrap mono' }, value)),
  );
  const payload =
    typeof message.payload === 'string'
      ? message.payload
      : JSON.stringify(message.payload, null, 2);

  const actions = [];
  if (message.state === 'dead') {
    actions.push(
      h(
        'button',
        {
          id: 'replay-one',
          onclick: async () => {
            const done = await act(
              `Replay ${message.id} into ${message.topic}/${message.group}?`,
              'replay',
              {
                topic: message.topic,
                group: message.group,
                ids: [message.id],
              },
            );
            if (done) {
              toast('Replayed: the message waits in its group again');
              go('/message', {
                topic: message.topic,
                group: message.group,
                state: 'waiting',
                id: message.id,
              });
            }
          },
        },
        'Replay',
      ),
    );
  } else if (message.state !== 'waiting') {
    actions.push(
      h(
        'button',
        {
          id: 'requeue',
          onclick: async () => {
            const caution =
              message.state === 'in-flight' ? ' The consumer holding it loses its claim.' : '';
            const done = await act(
              `Move ${message.id} back to waiting?${caution}`,
              'requeue',
              where,
            );
            if (done) {
              toast('Moved back to waiting');
              go('/message', { ...where, state: 'waiting' });
            }
          },
        },
        'Move back to waiting',
      ),
    );
  }

  // Replayed or moved back, a message waits for a consumer; say how to start one when none runs.
  const idle =
    message.state === 'waiting' && consumers === 0
      ? h(
          'p',
          { id: 'no-consumer', class: 'muted' },
          `No consumer of ${message.topic}/${message.group} was seen in the last 5 minutes, so `,
          'this message waits until one runs, for example: ',
          h('code', {}, `npx mailbus consume ${message.topic} --group ${message.group} --max 1`),
        )
      : '';

  const threadRows = thread.map((item) =>
    h(
      'li',
      { class: item.id === message.id ? 'current' : '' },
      h(
        'a',
        {
          href: `#/message?${new URLSearchParams({ topic: item.topic, group: item.group, state: item.state, id: item.id })}`,
        },
        item.id,
      ),
      ' ',
      stateBadge(item.state),
      ` ${time(item.storedAt)}`,
      item.id === message.id ? ' (this one)' : '',
    ),
  );

  view.replaceChildren(
    h('h1', {}, message.subject || message.id),
    h(
      'section',
      { class: 'panel' },
      h(
        'dl',
        { class: 'facts' },
        facts.map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)]),
      ),
      actions.length ? h('div', { class: 'actions', style: undefined }, actions) : '',
      idle,
    ),
    h('section', { class: 'panel' }, h('h2', {}, 'Payload'), h('pre', { id: 'payload' }, payload)),
    h(
      'section',
      { class: 'panel' },
      h('h2', {}, 'Headers'),
      h('div', { class: 'scroll' }, h('table', {}, h('tbody', {}, headerRows))),
    ),
    message.key === undefined
      ? ''
      : h(
          'section',
          { class: 'panel' },
          h('h2', {}, `Thread of key ${message.key}`),
          h('ol', { id: 'thread' }, threadRows),
        ),
  );
}

// ---- routing -------------------------------------------------------------------------------

async function route() {
  const { path, params } = hashParams();
  if (path === '/search') {
    document.getElementById('search-input').value = '';
    await showSearch(params);
  } else if (path === '/message') {
    await showMessage(params);
  } else {
    await showOverview();
  }
}

document.getElementById('search-bar').addEventListener('submit', (event) => {
  event.preventDefault();
  go('/search', parseSearchBar(document.getElementById('search-input').value));
});

operatorInput.value = localStorage.getItem('mailbus.operator') ?? '';
operatorInput.addEventListener('change', () =>
  localStorage.setItem('mailbus.operator', operatorInput.value.trim()),
);

window.addEventListener('hashchange', () => route().catch(failure));
route().catch(failure);
