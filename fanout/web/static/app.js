// relay demo page: shows one channel's (or one pattern's) messages live.
//
// It speaks the relay.v1.json envelope: each message arrives as
// {"channel","seq"?,"time","data"|"data_b64"}, and events ({"event":…}) may
// come between them; a server that selects plain relay.v1 instead sends raw
// payloads, which the page shows as before.
//
// The WebSocket handler only queues what arrives; one requestAnimationFrame
// callback renders the queue as a DocumentFragment, so 10,000 messages/s cost
// one DOM update per frame, and the list keeps at most MAX_ROWS rows.
// Messages are untrusted: they reach the DOM only through textContent.
"use strict";

(() => {
  const MAX_ROWS = 500; // rows kept in the list; older ones are dropped
  // Rows added per frame. Faster than this (6,000 messages/s at 60 frames/s)
  // nobody reads rows anyway, so each frame shows only the newest; the count
  // and the row numbers still say how many arrived.
  const ROWS_PER_FRAME = 100;
  const MAX_TEXT = 4096; // characters of a text message shown; the rest is counted
  const HEX_BYTES = 32; // bytes of a binary message shown in hex
  const BACKOFF_BASE = 500; // ms: first reconnect delay cap, doubled per failure
  const BACKOFF_MAX = 30000; // ms: largest reconnect delay cap
  const STABLE_AFTER = 10000; // ms open before the backoff starts over
  const MAX_CHANNEL = 128; // bytes, as shared/subjects.MaxChannelLen
  const CHANNEL_CHARS = /^[A-Za-z0-9_.*>-]*$/;
  const TOKEN = /^[A-Za-z0-9_-]+$/;

  const CLOSE_MEANINGS = {
    1000: "closed normally",
    1001: "going away",
    1003: "unsupported data",
    1006: "connection lost",
    1008: "policy violation",
    1011: "server error",
    1012: "service restart",
    1013: "try again later",
    4400: "bad request",
    4401: "token needed, invalid or expired",
    4403: "token does not allow this channel",
  };
  // Close codes after which reconnecting with the same token cannot help.
  const AUTH_CLOSE = new Set([4401, 4403]);
  const TOKEN_KEY = "relay.token"; // sessionStorage: this tab only
  // Offered in this order; the server picks the envelope when it has it.
  const SUBPROTOCOLS = ["relay.v1.json", "relay.v1"];
  const ENVELOPE = "relay.v1.json";
  const BEARER = "relay.bearer.";
  const JWT_CHARS = /^[A-Za-z0-9._~+\/=-]+$/;

  const $ = (id) => document.getElementById(id);
  const ui = {
    send: $("send"),
    picker: $("picker"),
    input: $("channel-input"),
    inputError: $("channel-error"),
    titleChannel: $("title-channel"),
    sendChannel: $("send-channel"),
    cmdNc: $("cmd-nc"),
    cmdSend: $("cmd-send"),
    cmdWatch: $("cmd-watch"),
    ingestNote: $("ingest-note"),
    status: $("status"),
    statusText: $("status-text"),
    retry: $("retry"),
    retryText: $("retry-text"),
    retryNow: $("retry-now"),
    count: $("count"),
    rate: $("rate"),
    pausedNote: $("paused-note"),
    pause: $("pause"),
    clear: $("clear"),
    log: $("log"),
    empty: $("empty"),
    latest: $("latest"),
    maxRows: $("max-rows"),
    tokenForm: $("token-form"),
    tokenInput: $("token-input"),
    tokenState: $("token-state"),
    tokenForget: $("token-forget"),
    talk: $("talk"),
    talkInput: $("talk-input"),
    senders: $("senders"),
    sendersStat: $("senders-stat"),
  };

  const config = readConfig();
  const emptyText = ui.empty.textContent;
  const numberFormat = new Intl.NumberFormat();

  // Connection.
  let channel = ""; // channel (or pattern) shown; "" while none (invalid URL)
  let pattern = false; // channel is a wildcard pattern: rows name their channel
  let ws = null; // the current socket; events of older ones are ignored
  let failures = 0; // connections in a row that closed before STABLE_AFTER
  let retryTimer = 0;
  let retryAt = 0;
  let countdownTimer = 0;
  let stableTimer = 0;
  let token = takeToken(); // "" when none
  // Durable channels: the stream sequence of the last message shown, so a
  // reconnect resumes after it (?since=) and nothing stored is missed.
  let lastSeq = 0;
  let resuming = null; // {after, replayed, gap} while a resume's replay runs

  // Messages.
  let pending = []; // received, not yet rendered (bounded: see enqueue)
  let received = 0; // messages on this channel since it was opened or cleared
  let rendered = 0; // sequence number of the newest rendered message
  let paused = false;
  let catchUp = false; // the next frame may show up to MAX_ROWS waiting rows
  let frame = 0; // requestAnimationFrame id while a render is scheduled
  let follow = true; // keep the newest row in view
  let rateSamples = []; // [time ms, received] over the last couple of seconds

  function readConfig() {
    try {
      return JSON.parse($("relay-config").textContent) || {};
    } catch {
      return {};
    }
  }

  // isPattern: the name has a wildcard token (sensors.*, sensors.>).
  const isPattern = (name) => /[*>]/.test(name);

  // validateChannel applies the server's rule (shared/subjects): dot-joined
  // [A-Za-z0-9_-]+ tokens, at most 128 bytes; to watch many channels a
  // token may be "*" (any one part) and the last one ">" (one or more
  // parts). It returns "" or a reason.
  function validateChannel(name) {
    if (name === "") return "Enter a channel name.";
    if (!CHANNEL_CHARS.test(name)) {
      const bad = [...name].find((c) => !CHANNEL_CHARS.test(c));
      const shown = bad.trim() === "" ? "a space or control character" : `"${bad}"`;
      return `A channel name cannot contain ${shown}: use letters, digits, "_" and "-", with "." between parts.`;
    }
    if (name.length > MAX_CHANNEL) return `A channel name has at most ${MAX_CHANNEL} characters; this one has ${name.length}.`;
    const tokens = name.split(".");
    if (tokens.some((t) => t === "")) {
      return 'Every "." must sit between two parts: no leading, trailing or double dots.';
    }
    for (const [i, t] of tokens.entries()) {
      if (t === "*" || (t === ">" && i === tokens.length - 1) || TOKEN.test(t)) continue;
      if (t === ">") return '">" matches the rest of the name, so it must be the last part (sensors.>).';
      return `"*" and ">" stand alone between dots (sensors.* or sensors.>), not inside "${t}".`;
    }
    return "";
  }

  // exampleChannel is a channel the pattern matches, for the send commands.
  const exampleChannel = (name) => name.split(".").map((t) => (t === "*" || t === ">" ? "example" : t)).join(".");

  // --- Token -------------------------------------------------------------------

  // takeToken reads a token given in the URL fragment (/#token=…: browsers
  // never send the fragment to a server), keeps it in sessionStorage and
  // removes it from the address bar, so it is not bookmarked or shared.
  function takeToken() {
    const frag = new URLSearchParams(location.hash.slice(1));
    const given = (frag.get("token") || "").trim();
    if (given) {
      storeToken(given);
      frag.delete("token");
      const rest = frag.toString();
      history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    }
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return given; // storage blocked: keep it for this page only
    }
  }

  function storeToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage blocked (private mode settings): the token lives in memory only.
    }
  }

  // tokenClaims decodes a JWT's payload to show who it names and until when.
  // It is not a check (only the server can check a token), just a label.
  function tokenClaims(t) {
    try {
      const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))) || {};
    } catch {
      return {};
    }
  }

  function showToken(problem) {
    const needed = Boolean(config.auth) || Boolean(token) || Boolean(problem);
    ui.tokenForm.hidden = !needed;
    if (!needed) return;
    let text;
    if (problem) {
      text = problem;
    } else if (token) {
      const c = tokenClaims(token);
      const who = c.sub ? ` for ${c.sub}` : "";
      const until = c.exp ? `, valid until ${new Date(c.exp * 1000).toLocaleString()}` : "";
      text = `Using a token${who}${until}.`;
    } else {
      text = "No token: only public channels can be watched.";
    }
    ui.tokenState.textContent = text;
    ui.tokenForm.dataset.problem = problem ? "true" : "false";
  }

  // authProblem puts a 4401/4403 close into words.
  function authProblem(e) {
    if (e.code === 4403) {
      return `Your token does not allow watching ${channel}. Use a token with watch permission for it.`;
    }
    if (/expired/.test(e.reason)) return "Your token has expired. Paste a new one to continue.";
    if (!token) return `${channel} needs a token. Paste one to watch it.`;
    return `The server did not accept this token (${e.reason || "unauthorized"}). Paste another one.`;
  }

  function channelFromURL() {
    const params = new URLSearchParams(location.search);
    return params.has("channel") ? params.get("channel") : "default";
  }

  function wsURL(name, raw) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/${raw ? name : encodeURIComponent(name)}`;
  }

  // ingestAddress resolves publicIngestAddr: "host:port", ":port" (this
  // page's host) or "" (unknown: a placeholder is shown).
  function ingestAddress() {
    const addr = String(config.publicIngestAddr || "").trim();
    const i = addr.lastIndexOf(":");
    if (i < 0 || i === addr.length - 1) return null;
    const host = (addr.slice(0, i) || location.hostname).replace(/^\[(.*)\]$/, "$1");
    return { host, port: addr.slice(i + 1) };
  }

  // --- Page state -----------------------------------------------------------

  // openChannel switches to name. history is "push" (the picker), "replace"
  // or "" (the URL already says so: page load, back/forward).
  function openChannel(name, history) {
    const problem = validateChannel(name);
    showInputError(problem);
    if (problem) {
      if (!history) {
        // The URL names an invalid channel: show why instead of connecting.
        disconnect();
        channel = "";
        resetMessages();
        ui.input.value = name;
        setTitles(name);
        ui.send.hidden = true;
        ui.empty.textContent = "Choose a valid channel name above to see its messages.";
        setState("invalid", "Not connected: invalid channel name");
      }
      return;
    }
    if (history) {
      const url = new URL(location.href);
      url.searchParams.set("channel", name);
      if (url.href !== location.href) {
        window.history[history === "push" ? "pushState" : "replaceState"]({ channel: name }, "", url);
      }
    }
    ui.input.value = name;
    if (name === channel) {
      retryNow(); // the same channel again: reconnect now if waiting to
      return;
    }
    disconnect();
    channel = name;
    pattern = isPattern(name);
    ui.talk.hidden = ui.sendersStat.hidden = true; // until this channel's senders event
    ui.log.classList.toggle("with-channel", pattern);
    failures = 0;
    lastSeq = 0;
    resetMessages();
    setTitles(name);
    showCommands(name);
    ui.send.hidden = false;
    ui.empty.textContent = emptyText;
    connect();
  }

  function setTitles(name) {
    document.title = `${name} · relay`;
    ui.titleChannel.textContent = name;
    ui.sendChannel.textContent = isPattern(name) ? exampleChannel(name) : name;
  }

  function showCommands(watched) {
    // Senders name one channel: for a pattern, one it matches.
    const name = isPattern(watched) ? exampleChannel(watched) : watched;
    const addr = ingestAddress();
    const host = addr ? addr.host : "HOST";
    const port = addr ? addr.port : "7071";
    const hostPort = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    // Valid channel names need no shell quoting. -q1: netcat-openbsd (Debian's
    // nc) would otherwise wait forever after stdin ends.
    ui.cmdNc.textContent = `printf '${name}\\nhello\\n' | nc -q1 ${host} ${port}`;
    ui.cmdSend.textContent = `echo hello | relay send ${hostPort} ${name}`;
    ui.cmdWatch.textContent = isPattern(watched)
      ? `relay watch --envelope '${wsURL(watched, true)}'` // quoted: * and > are the shell's too
      : `relay watch ${wsURL(name)}`;
    ui.ingestNote.hidden = addr !== null;
  }

  function showInputError(problem) {
    ui.inputError.textContent = problem;
    ui.inputError.hidden = !problem;
    if (problem) ui.input.setAttribute("aria-invalid", "true");
    else ui.input.removeAttribute("aria-invalid");
  }

  // setState shows the connection state. The status element is a polite live
  // region: it changes on transitions only, never per message or per tick.
  function setState(state, text) {
    ui.status.dataset.state = state;
    if (ui.statusText.textContent !== text) ui.statusText.textContent = text;
  }

  // --- Connection -----------------------------------------------------------

  function connect() {
    clearRetry();
    // The token travels as a subprotocol next to relay.v1.json (or relay.v1),
    // which the server selects: never in the URL, and never echoed back.
    const protocols = token ? [...SUBPROTOCOLS, BEARER + token] : SUBPROTOCOLS;
    // After a reconnect a durable channel resumes where this page was
    // (patterns are live only).
    resuming = lastSeq && !pattern ? { after: lastSeq, replayed: 0, gap: null } : null;
    const url = wsURL(channel) + (resuming ? `?since=${lastSeq}` : "");
    const sock = new WebSocket(url, protocols);
    sock.binaryType = "arraybuffer";
    ws = sock;
    let opened = false;
    setState("connecting", `${failures ? "Reconnecting" : "Connecting"} to ${channel}…`);

    sock.onopen = () => {
      if (ws !== sock) return;
      opened = true;
      setState("open", `Live on ${channel}`);
      if (failures) enqueue({ event: "Reconnected", kind: "ok" });
      stableTimer = setTimeout(() => { failures = 0; }, STABLE_AFTER);
    };
    sock.onmessage = (e) => {
      if (ws !== sock) return;
      if (sock.protocol !== ENVELOPE) {
        received++;
        enqueue({ n: received, t: Date.now(), data: e.data });
        return;
      }
      let env;
      try {
        env = JSON.parse(e.data);
      } catch {
        enqueue({ event: "The server sent a frame that is not an envelope", kind: "bad" });
        return;
      }
      if (env.event) {
        onEvent(env);
        return;
      }
      received++;
      if (env.seq) lastSeq = env.seq;
      if (resuming) resuming.replayed++;
      enqueue({ n: received, t: envelopeTime(env.time), channel: env.channel, seq: env.seq, data: envelopeData(env) });
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      ws = null;
      clearTimeout(stableTimer);
      const why = closeText(e);
      // The resume point was refused (4400: the channel is no longer
      // durable) or is gone (4410): the next connection starts live.
      if (e.code === 4400 || e.code === 4410) lastSeq = 0;
      if (AUTH_CLOSE.has(e.code)) {
        // Retrying with the same token gets the same answer: wait for the
        // user to give another one (or pick another channel).
        const problem = authProblem(e);
        if (opened && received) enqueue({ event: `Disconnected: ${why}`, kind: "bad" });
        setState("denied", e.code === 4403 ? "Not allowed: channel not permitted" : "Not allowed: token needed");
        showToken(problem);
        if (!ui.tokenInput.value) ui.tokenInput.focus({ preventScroll: true });
        return;
      }
      if (opened) enqueue({ event: `Disconnected: ${why}`, kind: "bad" });
      setState("closed", opened ? `Disconnected: ${why}` : `Could not connect (${e.code})`);
      scheduleRetry();
    };
  }

  // onEvent handles an envelope event, for this client alone.
  function onEvent(ev) {
    switch (ev.event) {
      case "gap":
        if (resuming) resuming.gap = ev;
        enqueue({ event: `Missed messages ${ev.from}–${ev.to}: no longer stored`, kind: "bad" });
        break;
      case "live":
        // A resume's replay is done: say whether anything was missed.
        if (resuming) {
          const r = resuming;
          resuming = null;
          enqueue(r.gap
            ? { event: `Resumed after #${r.after}: ${r.replayed} replayed, missed ${r.gap.from}–${r.gap.to} (no longer stored)`, kind: "bad" }
            : { event: `Resumed after #${r.after}: ${r.replayed} replayed, 0 missed`, kind: "ok" });
        }
        break;
      case "senders":
        // Sent on control channels only: the channel's TCP senders can be
        // talked to, so show how many there are and the send box.
        ui.senders.textContent = numberFormat.format(ev.count);
        ui.sendersStat.hidden = false;
        ui.talk.hidden = false;
        break;
      default:
        // Other events need nothing shown here.
        break;
    }
  }

  // envelopeTime is the envelope's time in ms (the server's clock: JetStream's
  // timestamp on durable channels), or now if it cannot be read. Date.parse
  // reads milliseconds; the nanoseconds are cut off first.
  function envelopeTime(time) {
    const ms = Date.parse(String(time || "").replace(/(\.\d{3})\d+/, "$1"));
    return Number.isFinite(ms) ? ms : Date.now();
  }

  // envelopeData is a text payload as a string, a binary one (data_b64) as
  // an ArrayBuffer, as a plain WebSocket would have delivered them.
  function envelopeData(env) {
    if (typeof env.data === "string") return env.data;
    const bin = atob(env.data_b64 || "");
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  function closeText(e) {
    const reason = e.reason || CLOSE_MEANINGS[e.code] || "";
    return reason ? `${e.code} ${reason}` : String(e.code);
  }

  // disconnect closes the current socket for good (a channel switch).
  function disconnect() {
    clearRetry();
    clearTimeout(stableTimer);
    if (ws) {
      const sock = ws;
      ws = null;
      sock.onopen = sock.onmessage = sock.onclose = null;
      sock.close(1000, "channel changed");
    }
  }

  // scheduleRetry waits a random delay in [0, min(30 s, 0.5 s * 2^failures))
  // ("full jitter"), so receivers cut off together do not return together.
  function scheduleRetry() {
    const cap = Math.min(BACKOFF_MAX, BACKOFF_BASE * 2 ** Math.min(failures, 16));
    const delay = Math.random() * cap;
    failures++;
    retryAt = Date.now() + delay;
    retryTimer = setTimeout(connect, delay);
    ui.retry.hidden = false;
    tickCountdown();
    countdownTimer = setInterval(tickCountdown, 250);
  }

  function tickCountdown() {
    const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    const text = `Retrying in ${s} s (attempt ${failures})`;
    if (ui.retryText.textContent !== text) ui.retryText.textContent = text;
  }

  function clearRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = countdownTimer = 0;
    ui.retry.hidden = true;
  }

  function retryNow() {
    if (retryTimer || (!ws && ui.status.dataset.state === "denied")) connect();
  }

  // reconnectNow connects again at once, with the current token.
  function reconnectNow() {
    if (!channel) return;
    if (ws) {
      const sock = ws;
      ws = null;
      sock.onopen = sock.onmessage = sock.onclose = null;
      sock.close(1000, "token changed");
    }
    failures = 0;
    connect();
  }

  // --- Messages ---------------------------------------------------------------

  // enqueue keeps at most 2*MAX_ROWS entries waiting (while paused, in a
  // background tab, or in a burst): only the newest MAX_ROWS can be shown.
  function enqueue(item) {
    if (!item.t) item.t = Date.now();
    pending.push(item);
    if (pending.length >= 2 * MAX_ROWS) pending.splice(0, pending.length - MAX_ROWS);
    schedule();
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function render() {
    frame = 0;
    const count = numberFormat.format(received);
    if (ui.count.textContent !== count) {
      ui.count.textContent = count;
      showRate(performance.now());
    }
    if (paused) {
      const unseen = received - rendered;
      ui.pausedNote.textContent = unseen ? `Paused · ${numberFormat.format(unseen)} new` : "Paused";
      return;
    }
    if (pending.length === 0) return;

    const limit = catchUp ? MAX_ROWS : ROWS_PER_FRAME;
    catchUp = false;
    const batch = pending.length > limit ? pending.slice(-limit) : pending;
    pending = [];
    const fragment = document.createDocumentFragment();
    for (const item of batch) fragment.appendChild(item.event ? eventRow(item) : messageRow(item));
    for (let i = batch.length - 1; i >= 0; i--) {
      if (batch[i].n) { rendered = batch[i].n; break; }
    }

    const log = ui.log;
    const excess = log.childElementCount + batch.length - MAX_ROWS;
    if (batch.length >= MAX_ROWS || excess >= log.childElementCount) {
      log.replaceChildren(fragment);
    } else {
      if (excess > 0) {
        const range = document.createRange();
        range.setStartBefore(log.firstChild);
        range.setEndAfter(log.children[excess - 1]);
        range.deleteContents();
      }
      log.appendChild(fragment);
    }
    ui.empty.hidden = true;
    if (follow) log.scrollTop = log.scrollHeight;
    else ui.latest.hidden = false;
  }

  function messageRow(m) {
    const li = document.createElement("li");
    li.className = "msg";
    li.append(span("t", formatTime(m.t)), span("n", `#${m.n}`));
    if (pattern) {
      const c = span("c", m.channel || "");
      c.title = m.channel || "";
      li.append(c);
    }
    const body = span("b", "");
    if (typeof m.data === "string") {
      if (m.data === "") {
        body.classList.add("empty");
      } else if (m.data.length > MAX_TEXT) {
        body.textContent = m.data.slice(0, MAX_TEXT);
        body.append(span("more", ` … ${numberFormat.format(m.data.length - MAX_TEXT)} more characters`));
      } else {
        body.textContent = m.data;
      }
    } else {
      const bytes = new Uint8Array(m.data, 0, Math.min(HEX_BYTES, m.data.byteLength));
      let hex = "";
      for (const b of bytes) hex += (hex ? " " : "") + (b < 16 ? "0" : "") + b.toString(16);
      if (m.data.byteLength > HEX_BYTES) hex += " …";
      li.classList.add("bin");
      body.append(span("tag", `binary · ${formatSize(m.data.byteLength)}`), span("hex", hex));
    }
    li.append(body);
    return li;
  }

  function eventRow(item) {
    const li = document.createElement("li");
    li.className = `event event-${item.kind}`;
    li.append(span("t", formatTime(item.t)), span("n", ""), span("what", item.event));
    return li;
  }

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  let lastSecond = -1;
  let lastSecondText = "";
  function formatTime(ms) {
    const second = Math.floor(ms / 1000);
    if (second !== lastSecond) {
      const d = new Date(ms);
      lastSecond = second;
      lastSecondText = [d.getHours(), d.getMinutes(), d.getSeconds()].map((v) => String(v).padStart(2, "0")).join(":");
    }
    return `${lastSecondText}.${String(ms % 1000).padStart(3, "0")}`;
  }

  function formatSize(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
    return `${(n / 1048576).toFixed(1)} MiB`;
  }

  function resetMessages() {
    pending = [];
    received = rendered = 0;
    rateSamples = [[performance.now(), 0]];
    ui.log.replaceChildren();
    ui.empty.hidden = false;
    ui.latest.hidden = true;
    follow = true;
    ui.count.textContent = "0";
    ui.rate.textContent = "0";
    if (paused) ui.pausedNote.textContent = "Paused";
  }

  // sampleRate records the count twice a second; the rate shown is over the
  // last ~2 s of samples.
  function sampleRate() {
    const now = performance.now();
    rateSamples.push([now, received]);
    while (rateSamples.length > 2 && now - rateSamples[0][0] > 2000) rateSamples.shift();
    showRate(now);
  }

  function showRate(now) {
    if (rateSamples.length === 0 || now - rateSamples[0][0] < 250) return; // too short to say
    const [t0, n0] = rateSamples[0];
    const rate = ((received - n0) * 1000) / (now - t0);
    const text = rate === 0 ? "0" : rate < 10 ? rate.toFixed(1) : numberFormat.format(Math.round(rate));
    if (ui.rate.textContent !== text) ui.rate.textContent = text;
  }

  function setPaused(on) {
    paused = on;
    catchUp = !on;
    // The label says what a press does ("Resume" while paused), so no aria-pressed.
    ui.pause.classList.toggle("on", on);
    ui.pause.textContent = on ? "Resume" : "Pause";
    ui.pausedNote.hidden = !on;
    ui.pausedNote.textContent = "Paused";
    schedule();
  }

  // --- Wiring -----------------------------------------------------------------

  function copy(button) {
    const source = $(button.dataset.copy);
    const text = source.textContent;
    const done = (ok) => {
      button.textContent = ok ? "Copied" : "Select and copy";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(() => done(true), () => done(false));
      return;
    }
    // Plain http on another host: no Clipboard API; select the text instead.
    const range = document.createRange();
    range.selectNodeContents(source);
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    done(ok);
  }

  ui.tokenForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const value = ui.tokenInput.value.trim();
    if (!value || !JWT_CHARS.test(value)) {
      showToken("That does not look like a token: paste the whole eyJ… string.");
      return;
    }
    token = value;
    storeToken(token);
    ui.tokenInput.value = "";
    showToken("");
    reconnectNow();
  });
  ui.tokenForget.addEventListener("click", () => {
    token = "";
    storeToken("");
    ui.tokenInput.value = "";
    showToken("");
    reconnectNow();
  });
  ui.picker.addEventListener("submit", (e) => {
    e.preventDefault();
    openChannel(ui.input.value.trim(), "push");
  });
  ui.input.addEventListener("input", () => {
    if (!ui.inputError.hidden) showInputError(ui.input.value.trim() ? validateChannel(ui.input.value.trim()) : "");
  });
  window.addEventListener("popstate", () => openChannel(channelFromURL(), ""));
  window.addEventListener("online", retryNow);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) catchUp = true; });
  ui.retryNow.addEventListener("click", retryNow);
  ui.pause.addEventListener("click", () => setPaused(!paused));
  // Talking back: the line goes to the channel's TCP senders (fanout
  // publishes it to <prefix>.ctl.<channel>); shown in the log as sent.
  ui.talk.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.talkInput.value;
    if (!ws || ws.readyState !== WebSocket.OPEN || text === "") return;
    ws.send(text);
    enqueue({ event: `Sent to senders: ${text}`, kind: "ok" });
    ui.talkInput.value = "";
  });
  ui.clear.addEventListener("click", () => { resetMessages(); });
  ui.log.addEventListener("scroll", () => {
    const log = ui.log;
    follow = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    if (follow) ui.latest.hidden = true;
  }, { passive: true });
  ui.latest.addEventListener("click", () => {
    follow = true;
    ui.latest.hidden = true;
    ui.log.scrollTop = ui.log.scrollHeight;
  });
  for (const b of document.querySelectorAll("button[data-copy]")) b.addEventListener("click", () => copy(b));

  // On a phone the send help takes most of the screen: keep it open on the
  // landing page, folded when a link names the channel.
  if (new URLSearchParams(location.search).has("channel") && matchMedia("(max-width: 720px)").matches) {
    ui.send.open = false;
  }
  ui.maxRows.textContent = numberFormat.format(MAX_ROWS);
  showToken("");
  setInterval(sampleRate, 500);
  openChannel(channelFromURL(), "");
})();
