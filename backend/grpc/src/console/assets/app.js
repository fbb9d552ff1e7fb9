// The Stigmer console: pages drawn in the browser from the server's JSON API (see ADR 0035).
// No build step and no library: this file is served as written. Pages are routed by the URL's
// hash (#/kind/Agent), so a reload or a shared link opens the same page.
(() => {
  'use strict';

  const KEY = 'stigmer.apiKey';
  const SERVICE = '/ai.stigmer.backend.v1.ResourceService';
  const SEALED = /^stigmer-sealed:/;
  const state = { kinds: [], byName: new Map(), byEnum: new Map(), byPrefix: new Map(), page: null };

  // ---- DOM ---------------------------------------------------------------------------------

  /** An element: `attrs` holds properties (class, href, text, on<Event>), then children. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'text') el.textContent = value;
      else if (name === 'class') el.className = value;
      else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function main() {
    return document.getElementById('main');
  }

  /** Replaces the page's content; `title` becomes the h1 and the document's title. */
  function show(title, ...content) {
    document.title = `${title} · Stigmer console`;
    main().replaceChildren(h('h1', { text: title }), ...content.flat(Infinity).filter(Boolean));
  }

  function announce(text) {
    document.getElementById('announce').textContent = text;
  }

  // ---- API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super(body.message || `HTTP ${status}`);
      this.status = status;
      this.code = body.code || '';
    }
    get unauthenticated() {
      return this.status === 401 || this.code === 'unauthenticated';
    }
  }

  function headers(extra) {
    const all = { 'Content-Type': 'application/json', ...extra };
    const key = sessionStorage.getItem(KEY);
    if (key) all.Authorization = `Bearer ${key}`;
    return all;
  }

  async function readError(response) {
    const text = await response.text();
    try {
      return new ApiError(response.status, JSON.parse(text));
    } catch {
      return new ApiError(response.status, { message: text || response.statusText });
    }
  }

  /** One unary call: POST the request as JSON, get the response as JSON. */
  async function call(path, body) {
    const response = await fetch(path, {
      method: 'POST',
      headers: headers(),
      body: JSON.stringify(body || {}),
      credentials: 'omit',
    });
    if (!response.ok) throw await readError(response);
    return response.json();
  }

  /**
   * A server stream as server-sent events (EventSource cannot send Authorization). Calls
   * `onMessage` with each message; resolves when the server ends the stream, rejects with an
   * ApiError when it ends it with an error.
   */
  async function stream(path, body, onMessage, signal, onOpen) {
    const response = await fetch(path, {
      method: 'POST',
      headers: headers({ Accept: 'text/event-stream' }),
      body: JSON.stringify(body || {}),
      credentials: 'omit',
      signal,
    });
    const type = response.headers.get('content-type') || '';
    if (!response.ok || !type.startsWith('text/event-stream')) throw await readError(response);
    if (onOpen) onOpen();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = sseParser(onMessage);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (parser(value) === 'end') {
        reader.cancel().catch(() => {});
        return;
      }
    }
  }

  /** Feeds text to an SSE parser; answers 'end' once the stream's end event arrived. */
  function sseParser(onMessage) {
    let buffer = '';
    let event = 'message';
    let data = [];
    const dispatch = () => {
      const payload = data.length ? JSON.parse(data.join('\n')) : {};
      const kind = event;
      event = 'message';
      data = [];
      if (kind === 'error') throw new ApiError(0, payload);
      if (kind === 'end') return 'end';
      onMessage(payload);
      return null;
    };
    return (text) => {
      buffer += text;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line === '') {
          if ((data.length || event !== 'message') && dispatch() === 'end') return 'end';
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = value;
          else if (field === 'data') data.push(value);
        }
      }
      return null;
    };
  }

  /**
   * Follows a stream for as long as the page shows; where the server cannot stream over HTTP
   * it calls `poll` every two seconds instead, so the page still changes without a reload.
   */
  function follow(path, body, onMessage, poll, onEnd) {
    const page = state.page;
    const live = document.getElementById('live');
    const say = (text) => live && (live.textContent = text);
    say('Connecting…');
    stream(path, body, onMessage, page.signal, () => say('Live.'))
      .then(() => {
        say('Ended.');
        if (onEnd) onEnd();
      })
      .catch((err) => {
        if (page.signal.aborted) return;
        if (err instanceof ApiError && (err.code === 'unimplemented' || err.status === 415)) {
          say('Live (polling: this server streams only over gRPC).');
          const timer = setInterval(() => poll().catch(() => {}), 2000);
          page.signal.addEventListener('abort', () => clearInterval(timer));
        } else {
          say(`Live updates stopped: ${err.message}`);
        }
      });
  }

  // ---- Formatting --------------------------------------------------------------------------

  const PLAIN = /^[A-Za-z_/][A-Za-z0-9_ ./@()-]*$/;
  const RESERVED = /^(true|false|null|yes|no|on|off|y|n|~)$/i;

  function yamlScalar(value) {
    if (value === null || value === undefined) return 'null';
    if (Array.isArray(value)) return '[]';
    if (typeof value === 'object') return '{}';
    if (typeof value !== 'string') return String(value);
    if (SEALED.test(value)) return '"[redacted: secret]"';
    // int64 fields are strings in proto3 JSON; YAML shows them as the numbers they are.
    if (/^-?(0|[1-9][0-9]*)$/.test(value)) return value;
    if (PLAIN.test(value) && !RESERVED.test(value) && !/ $/.test(value)) return value;
    return JSON.stringify(value);
  }

  function composite(value) {
    return value !== null && typeof value === 'object' && Object.keys(value).length > 0;
  }

  function yamlLines(value, indent, out) {
    const pad = ' '.repeat(indent);
    if (Array.isArray(value)) {
      for (const item of value) {
        if (!composite(item)) {
          out.push(`${pad}- ${yamlScalar(item)}`);
          continue;
        }
        const nested = [];
        yamlLines(item, indent + 2, nested);
        nested[0] = `${pad}- ${nested[0].slice(indent + 2)}`;
        out.push(...nested);
      }
      return out;
    }
    for (const [key, item] of Object.entries(value)) {
      const name = PLAIN.test(key) && !RESERVED.test(key) ? key : JSON.stringify(key);
      if (composite(item)) {
        out.push(`${pad}${name}:`);
        yamlLines(item, Array.isArray(item) ? indent : indent + 2, out);
      } else {
        out.push(`${pad}${name}: ${yamlScalar(item)}`);
      }
    }
    return out;
  }

  /** JSON as YAML, enough of it for reading: block style, quoting where YAML would misread. */
  function toYaml(value) {
    return composite(value) ? yamlLines(value, 0, []).join('\n') : yamlScalar(value);
  }

  /** A line diff (longest common subsequence): [[' '|'-'|'+', line], ...]. */
  function diffLines(before, after) {
    const a = before.split('\n');
    const b = after.split('\n');
    const common = Array.from({ length: a.length + 1 }, () => new Array(b.length + 1).fill(0));
    for (let i = a.length - 1; i >= 0; i--) {
      for (let j = b.length - 1; j >= 0; j--) {
        common[i][j] = a[i] === b[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
      }
    }
    const out = [];
    let i = 0;
    let j = 0;
    while (i < a.length || j < b.length) {
      if (i < a.length && j < b.length && a[i] === b[j]) {
        out.push([' ', a[i++]]);
        j++;
      } else if (i < a.length && (j === b.length || common[i + 1][j] >= common[i][j + 1])) {
        out.push(['-', a[i++]]);
      } else {
        out.push(['+', b[j++]]);
      }
    }
    return out;
  }

  function bytes(count) {
    const n = Number(count || 0);
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit++;
    }
    return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
  }

  function when(timestamp) {
    if (!timestamp) return '';
    const date = new Date(timestamp);
    return h('time', { datetime: timestamp, text: date.toLocaleString() });
  }

  /** When the resource last changed, as its audit says. */
  function updatedAt(resource) {
    const audit = (resource && resource.status && resource.status.audit) || {};
    const stamps = [audit.specAudit, audit.statusAudit].map((a) => (a && a.updatedAt) || '');
    return stamps.sort().pop();
  }

  /** A list response's resources, whatever the field is called (items, entries). */
  function itemsOf(list) {
    return Object.values(list || {}).find(Array.isArray) || [];
  }

  function labelsText(labels) {
    return Object.entries(labels || {})
      .map(([k, v]) => `${k}=${v}`)
      .join(', ');
  }

  // ---- Routing -----------------------------------------------------------------------------

  function link(hash, text) {
    return h('a', { href: hash, text });
  }

  function resourceHash(kind, id) {
    return `#/resource/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`;
  }

  /** The route in the hash: its path segments and its query. */
  function route() {
    const hash = location.hash.startsWith('#/') ? location.hash : '#/';
    const [path, query] = hash.slice(1).split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { parts, query: new URLSearchParams(query || '') };
  }

  function hashWith(parts, query) {
    const text = query.toString();
    return `#/${parts.map(encodeURIComponent).join('/')}${text ? `?${text}` : ''}`;
  }

  async function render() {
    if (state.page) state.page.abort();
    state.page = new AbortController();
    const { parts, query } = route();
    const [page, ...rest] = parts;
    try {
      if (!page) await overview();
      else if (page === 'kind') await kindPage(rest[0], query);
      else if (page === 'resource') await resourcePage(rest[0], rest[1], query);
      else if (page === 'ref') await referencePage(rest[0], rest[1], rest[2]);
      else if (page === 'executions') await executionsPage(query);
      else if (page === 'execution') await executionPage(rest[0], rest[1]);
      else show('Not found', h('p', { text: 'No such page. ' }, link('#/', 'Back to the overview')));
    } catch (err) {
      failed(err);
    }
  }

  function failed(err) {
    if (err instanceof ApiError && err.unauthenticated) return keyForm(err);
    show('Something went wrong', h('p', { class: 'error', role: 'alert', text: err.message }));
  }

  /** The API key form of cloud mode: the key stays in this tab's sessionStorage only. */
  function keyForm(err) {
    const input = h('input', { id: 'api-key', name: 'api-key', type: 'password', autocomplete: 'off', required: true });
    const form = h(
      'form',
      {
        class: 'key',
        onsubmit: (event) => {
          event.preventDefault();
          sessionStorage.setItem(KEY, input.value.trim());
          refreshKeyButton();
          render();
        },
      },
      h('p', { text: 'This server needs an API key. It is kept in this browser tab only, until you close it.' }),
      err && sessionStorage.getItem(KEY) ? h('p', { class: 'error', role: 'alert', text: err.message }) : null,
      h('label', { for: 'api-key', text: 'API key' }),
      input,
      h('button', { type: 'submit', text: 'Use this key' }),
    );
    show('API key', form);
    input.focus();
  }

  function refreshKeyButton() {
    document.getElementById('forget-key').hidden = !sessionStorage.getItem(KEY);
  }

  // ---- Pages -------------------------------------------------------------------------------

  async function overview() {
    const info = await call(`${SERVICE}/info`, {});
    const facts = [
      ['Version', info.version],
      ['Backend', info.backend],
      ['Revision', info.revision || '0'],
      ['Database', info.database],
      ['Location', info.location],
      ['Database size', info.databaseBytes === undefined ? 'unknown' : bytes(info.databaseBytes)],
    ];
    const counts = info.counts || {};
    show(
      'Overview',
      h('dl', { class: 'facts' }, facts.map(([name, value]) => [h('dt', { text: name }), h('dd', { text: value || '' })])),
      h('h2', { text: 'Kinds' }),
      h(
        'table',
        {},
        h('caption', { text: 'Resources of each kind' }),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Kind' }), h('th', { scope: 'col', class: 'num', text: 'Count' }))),
        h(
          'tbody',
          {},
          state.kinds.map((kind) =>
            h(
              'tr',
              {},
              h('th', { scope: 'row' }, kind.list ? link(`#/kind/${kind.name}`, kind.name) : kind.name),
              h('td', { class: 'num', text: counts[kind.name] || '0' }),
            ),
          ),
        ),
      ),
    );
  }

  async function kindPage(name, query) {
    const kind = state.byName.get(name);
    if (!kind || !kind.list) return show('Not found', h('p', { text: `No kind named ${name} can be listed.` }));
    const request = { pageToken: query.get('page') || '', labelSelector: query.get('labels') || '', namePrefix: query.get('prefix') || '' };
    const table = h('div', { id: 'rows' });
    show(`${kind.name} resources`, filterForm(kind, query), h('p', { id: 'live', class: 'live', role: 'status' }), table);
    const refresh = async () => {
      const list = await call(kind.list, request);
      table.replaceChildren(resourceTable(kind, itemsOf(list)), pager(kind, query, list.nextPageToken));
      return list;
    };
    const list = await refresh();
    let pending = null;
    const changed = (event) => {
      if (event.type === 'EVENT_TYPE_SNAPSHOT') return;
      announce(`${kind.name} ${event.id} ${(event.type || '').replace('EVENT_TYPE_', '').toLowerCase()}`);
      clearTimeout(pending);
      pending = setTimeout(() => refresh().catch(failed), 100);
    };
    follow(`${SERVICE}/watch`, { kind: kind.name, sinceRevision: list.revision || '0' }, changed, refresh);
  }

  function filterForm(kind, query) {
    const labels = h('input', { id: 'labels', name: 'labels', value: query.get('labels') || '', placeholder: 'team=infra,!draft' });
    const prefix = h('input', { id: 'prefix', name: 'prefix', value: query.get('prefix') || '', placeholder: 'pr-' });
    const submit = (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      if (labels.value.trim()) next.set('labels', labels.value.trim());
      if (prefix.value) next.set('prefix', prefix.value);
      location.hash = hashWith(['kind', kind.name], next);
    };
    return h(
      'form',
      { class: 'filters', role: 'search', onsubmit: submit },
      h('div', {}, h('label', { for: 'labels', text: 'Label selector' }), labels),
      h('div', {}, h('label', { for: 'prefix', text: 'Name starts with' }), prefix),
      h('button', { type: 'submit', text: 'Filter' }),
    );
  }

  function resourceTable(kind, items) {
    if (!items.length) return h('p', { class: 'empty', text: `No ${kind.name} matches.` });
    const columns = ['Name', 'Slug', 'Labels', 'Revision', 'Updated'];
    const executions = Boolean(kind.subscribe);
    if (executions) columns.splice(3, 0, 'Phase');
    return h(
      'table',
      { class: 'resources' },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', text: c })))),
      h(
        'tbody',
        {},
        items.map((item) => {
          const meta = item.metadata || {};
          const target = executions ? `#/execution/${kind.name}/${encodeURIComponent(meta.id)}` : resourceHash(kind.name, meta.id);
          const cells = [
            h('th', { scope: 'row' }, link(target, meta.name || meta.id)),
            h('td', { text: meta.slug || '' }),
            h('td', { class: 'labels', text: labelsText(meta.labels) }),
            h('td', { class: 'num', text: meta.revision || '' }),
            h('td', {}, when(updatedAt(item))),
          ];
          if (executions) cells.splice(3, 0, h('td', { text: phaseText(item) }));
          return h('tr', { 'data-id': meta.id }, cells);
        }),
      ),
    );
  }

  function pager(kind, query, next) {
    const links = [];
    if (query.get('page')) {
      const first = new URLSearchParams(query);
      first.delete('page');
      links.push(link(hashWith(['kind', kind.name], first), 'First page'));
    }
    if (next) {
      const following = new URLSearchParams(query);
      following.set('page', next);
      links.push(link(hashWith(['kind', kind.name], following), 'Next page'));
    }
    return h('nav', { class: 'pager', 'aria-label': 'Pages' }, links);
  }

  async function resourcePage(name, id, query) {
    const kind = state.byName.get(name);
    if (!kind || !kind.get) return show('Not found', h('p', { text: `No kind named ${name}.` }));
    const resource = await call(kind.get, { value: id });
    const meta = resource.metadata || {};
    const history = h('section', { 'aria-labelledby': 'history' }, h('h2', { id: 'history', text: 'History' }), h('p', { text: 'Reading revisions…' }));
    const refs = h('section', { 'aria-labelledby': 'references' }, h('h2', { id: 'references', text: 'References' }));
    show(
      `${kind.name} ${meta.name || id}`,
      h('p', { class: 'crumbs' }, link(`#/kind/${kind.name}`, `All ${kind.name} resources`), ` · id ${id} · revision ${meta.revision || ''}`),
      h('p', { id: 'live', class: 'live', role: 'status' }),
      h('section', { 'aria-labelledby': 'yaml' }, h('h2', { id: 'yaml', text: 'YAML' }), h('pre', { class: 'yaml', tabindex: '0', 'aria-label': 'The resource as YAML', text: toYaml(resource) })),
      history,
      refs,
    );
    const changed = (event) => event.type !== 'EVENT_TYPE_SNAPSHOT' && render();
    const poll = async () => {
      const latest = await call(kind.get, { value: id });
      if (String(latest.metadata.revision) !== String(meta.revision)) render();
    };
    follow(`${SERVICE}/watch`, { kind: kind.name, id, sinceRevision: String(meta.revision || 0) }, changed, poll);
    await Promise.all([
      historySection(history, kind, id, resource, query).catch((err) => history.append(h('p', { class: 'error', text: err.message }))),
      referencesSection(refs, kind, id, resource).catch((err) => refs.append(h('p', { class: 'error', text: err.message }))),
    ]);
  }

  /** Every retained version, newest first, walking back with getAtRevision. */
  async function versions(kind, id, resource) {
    const found = [{ revision: String(resource.metadata.revision), resource }];
    let before = Number(resource.metadata.revision) - 1;
    while (before > 0 && found.length < 50) {
      let event;
      try {
        event = await call(`${SERVICE}/getAtRevision`, { kind: kind.name, id, revision: String(before) });
      } catch (err) {
        if (err instanceof ApiError && (err.code === 'not_found' || err.code === 'out_of_range')) break;
        throw err;
      }
      const copy = { ...(event.resource || {}) };
      delete copy['@type'];
      found.push({ revision: String(event.revision), resource: copy });
      before = Number(event.revision) - 1;
    }
    return found;
  }

  async function historySection(section, kind, id, resource, query) {
    const all = await versions(kind, id, resource);
    const select = (name, label, chosen) =>
      h(
        'div',
        {},
        h('label', { for: name, text: label }),
        h('select', { id: name, name }, all.map((v) => h('option', { value: v.revision, selected: v.revision === chosen, text: `revision ${v.revision}` }))),
      );
    const to = query.get('to') || all[0].revision;
    const from = query.get('from') || (all[1] || all[0]).revision;
    const form = h(
      'form',
      {
        class: 'diff-form',
        onsubmit: (event) => {
          event.preventDefault();
          const data = new FormData(event.target);
          location.hash = hashWith(['resource', kind.name, id], new URLSearchParams({ from: data.get('from'), to: data.get('to') }));
        },
      },
      select('from', 'From', from),
      select('to', 'To', to),
      h('button', { type: 'submit', text: 'Compare' }),
    );
    const byRevision = new Map(all.map((v) => [v.revision, v.resource]));
    const pick = (revision) => toYaml(byRevision.get(revision) || {});
    const diff = diffLines(pick(from), pick(to));
    section.replaceChildren(
      section.firstChild,
      h('ol', { class: 'revisions', reversed: true }, all.map((v) => h('li', { 'data-revision': v.revision }, `revision ${v.revision} · `, when(updatedAt(v.resource))))),
      form,
      h('pre', { class: 'diff', tabindex: '0', 'aria-label': `Changes from revision ${from} to revision ${to}` }, diff.map(([mark, line]) => h('span', { class: mark === '+' ? 'add' : mark === '-' ? 'del' : 'same', text: `${mark} ${line}\n` }))),
    );
  }

  /** What the resource names (ids and references in its document) and what names it. */
  async function referencesSection(section, kind, id, resource) {
    const outgoing = new Map();
    walk(resource, [], (path, value) => {
      if (path[0] === 'metadata' && path[1] === 'id') return;
      if (typeof value === 'string') {
        const target = state.byPrefix.get(value.split('-')[0]);
        if (target && /^[a-z]+-[0-9a-z]{26}$/.test(value)) outgoing.set(value, { path, item: link(resourceHash(target.name, value), `${target.name} ${value}`) });
      } else if (value && typeof value === 'object' && typeof value.slug === 'string' && value.kind) {
        const target = state.byEnum.get(value.kind);
        if (target) outgoing.set(`${value.kind}/${value.slug}`, { path, item: link(`#/ref/${target.name}/${encodeURIComponent(value.org || '')}/${encodeURIComponent(value.slug)}`, `${target.name} ${value.slug}`) });
      }
    });
    const incoming = [];
    const listed = new Set([id]);
    for (const child of kind.children || []) {
      const answer = await call(child.path, { [child.field]: id, pageSize: 100 });
      const items = answer.metadata ? [answer] : itemsOf(answer);
      for (const item of items) {
        listed.add(item.metadata.id);
        incoming.push(link(resourceHash(child.kind, item.metadata.id), `${child.kind} ${item.metadata.name || item.metadata.id}`));
      }
    }
    // Any other resource of the org whose document holds this id (ResourceService/find).
    const found = await call(`${SERVICE}/find`, { query: id, matchText: true, pageSize: 100 });
    for (const item of found.items || []) {
      if (listed.has(item.id)) continue;
      listed.add(item.id);
      incoming.push([link(resourceHash(item.kind, item.id), `${item.kind} ${item.name || item.id}`), ' (mentions its id)']);
    }
    const list = (entries, none) => (entries.length ? h('ul', {}, entries.map((e) => h('li', {}, e))) : h('p', { class: 'empty', text: none }));
    section.append(
      h('h3', { text: 'It references' }),
      list([...outgoing.values()].map(({ path, item }) => [item, ` (${path.join('.')})`]), 'Nothing.'),
      h('h3', { text: 'Referenced by' }),
      list(incoming, 'Nothing.'),
    );
  }

  function walk(value, path, visit) {
    visit(path, value);
    if (value && typeof value === 'object') {
      for (const [key, item] of Object.entries(value)) walk(item, [...path, key], visit);
    }
  }

  async function referencePage(name, org, slug) {
    const kind = state.byName.get(name);
    if (!kind || !kind.getByReference) return show('Not found', h('p', { text: `No kind named ${name} has references.` }));
    const request = { kind: kind.enumName, slug };
    if (org) Object.assign(request, { org, scope: 'organization' });
    const resource = await call(kind.getByReference, request);
    location.replace(resourceHash(kind.name, resource.metadata.id));
  }

  function phaseText(item) {
    return ((item.status && item.status.phase) || '').replace(/^EXECUTION_/, '').toLowerCase().replace(/_/g, ' ');
  }

  async function executionsPage(query) {
    const kinds = state.kinds.filter((kind) => kind.subscribe && kind.list);
    const phases = kinds.length ? kinds[0].phases.filter((p) => !p.endsWith('_UNSPECIFIED')) : [];
    const chosen = query.get('phase') || '';
    const picker = h(
      'select',
      { id: 'phase', name: 'phase', onchange: (event) => (location.hash = hashWith(['executions'], new URLSearchParams(event.target.value ? { phase: event.target.value } : {}))) },
      h('option', { value: '', text: 'every phase' }),
      phases.map((phase) => h('option', { value: phase, selected: phase === chosen, text: phaseText({ status: { phase } }) })),
    );
    const sections = [];
    for (const kind of kinds) {
      const list = await call(kind.list, chosen ? { phase: chosen } : {});
      const items = itemsOf(list);
      const groups = chosen ? [chosen] : phases;
      sections.push(
        h('h2', { text: `${kind.name} resources` }),
        groups.map((phase) => {
          const inPhase = items.filter((item) => ((item.status && item.status.phase) || '') === phase);
          return inPhase.length ? [h('h3', { text: `${phaseText({ status: { phase } })} (${inPhase.length})` }), resourceTable(kind, inPhase)] : [];
        }),
        items.length ? [] : h('p', { class: 'empty', text: 'None.' }),
      );
    }
    show('Executions', h('form', { class: 'filters', onsubmit: (e) => e.preventDefault() }, h('div', {}, h('label', { for: 'phase', text: 'Phase' }), picker)), sections);
  }

  const ENDED = /COMPLETED|FAILED|CANCELLED/;

  async function executionPage(name, id) {
    const kind = state.byName.get(name);
    if (!kind || !kind.subscribe) return show('Not found', h('p', { text: `No execution kind named ${name}.` }));
    const phase = h('p', { class: 'phase' });
    const pre = h('pre', { class: 'yaml', tabindex: '0', 'aria-label': 'The execution as YAML' });
    const draw = (execution) => {
      phase.textContent = `Phase: ${phaseText(execution) || 'unknown'}`;
      pre.textContent = toYaml(execution);
      return execution;
    };
    const execution = draw(await call(kind.get, { value: id }));
    show(
      `${kind.name} ${(execution.metadata && execution.metadata.name) || id}`,
      h('p', { class: 'crumbs' }, link('#/executions', 'All executions'), ' · ', link(resourceHash(kind.name, id), 'history and references')),
      phase,
      h('p', { id: 'live', class: 'live', role: 'status' }),
      pre,
    );
    if (ENDED.test((execution.status && execution.status.phase) || '')) {
      document.getElementById('live').textContent = 'Ended.';
      return;
    }
    const poll = async () => {
      const latest = draw(await call(kind.get, { value: id }));
      if (ENDED.test((latest.status && latest.status.phase) || '')) {
        document.getElementById('live').textContent = 'Ended.';
        state.page.abort();
      }
    };
    follow(kind.subscribe, { [kind.subscribeField]: id }, draw, poll);
  }

  // ---- Start -------------------------------------------------------------------------------

  function navigation() {
    const items = [link('#/', 'Overview'), ...state.kinds.filter((k) => k.list && !k.subscribe).map((k) => link(`#/kind/${k.name}`, k.name)), link('#/executions', 'Executions')];
    document.getElementById('nav').replaceChildren(...items.map((item) => h('li', {}, item)));
  }

  async function start() {
    const response = await fetch('/console/kinds.json', { credentials: 'omit' });
    const { kinds } = await response.json();
    state.kinds = kinds;
    for (const kind of kinds) {
      state.byName.set(kind.name, kind);
      state.byEnum.set(kind.enumName, kind);
      state.byPrefix.set(kind.idPrefix, kind);
    }
    navigation();
    refreshKeyButton();
    document.getElementById('forget-key').addEventListener('click', () => {
      sessionStorage.removeItem(KEY);
      refreshKeyButton();
      render();
    });
    window.addEventListener('hashchange', () => {
      // The skip link's #main is a jump within the page, not a route.
      if (location.hash.startsWith('#/') || location.hash === '') {
        // Focus moves to the new page, as it would on a page load, for keyboard and
        // screen-reader users.
        render().then(() => main().focus({ preventScroll: true }));
      }
    });
    await render();
  }

  start().catch(failed);
})();
