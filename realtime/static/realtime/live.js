// Live results: applies poll.snapshot / poll.updated from ws/polls/<id> to the bars of the
// #live section (realtime/_results.html), on the live page, the vote page and the presenter view.
// Every message carries the full totals and a version that only grows, so the page keeps
// the highest version it has seen and ignores older ones; after a reconnect the server's
// snapshot brings it up to date whatever it missed.
(function () {
  "use strict";

  const root = document.getElementById("live");
  if (!root) return;
  const pollId = root.dataset.pollId;
  const conn = document.getElementById("conn");
  const connText = document.getElementById("conn-text");
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  const number = new Intl.NumberFormat();

  // Reconnect backoff: 0.5 s doubling to 15 s, with jitter so that thousands of viewers
  // of a restarted server do not all come back in the same instant.
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;

  let state = JSON.parse(document.getElementById("initial-poll").textContent);
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let countdownTimer = null;
  let gone = false;

  function setConnection(name, text) {
    conn.dataset.state = name;
    connText.textContent = text;
  }

  function render(poll, changed) {
    // Counts are null while the poll holds its results back from this viewer.
    const hidden = poll.results_hidden === true || poll.total === null;
    const total = hidden ? 0 : poll.total;
    let leader = null;
    for (const option of poll.options) {
      if (!hidden && option.count > 0 && (leader === null || option.count > leader.count)) leader = option;
    }
    const tie = leader !== null && poll.options.filter((o) => o.count === leader.count).length > 1;
    for (const option of poll.options) {
      const item = root.querySelector('.option[data-position="' + option.position + '"]');
      if (!item) continue;
      const share = total > 0 ? option.count / total : 0;
      const countEl = item.querySelector(".count");
      const before = countEl.dataset.value;
      const value = hidden ? "–" : number.format(option.count);
      countEl.textContent = value;
      countEl.dataset.value = value;
      item.querySelector(".pct").textContent = hidden ? "" : percent.format(share);
      item.querySelector(".bar").style.width = (share * 100).toFixed(2) + "%";
      item.classList.toggle("leading", !tie && leader !== null && leader.position === option.position);
      if (changed && before !== undefined && before !== value) {
        item.classList.remove("bump");
        void item.offsetWidth; // restart the animation
        item.classList.add("bump");
      }
    }
    document.getElementById("hidden-note").hidden = !hidden;
    document.getElementById("total").textContent = hidden ? "–" : number.format(total);
    document.getElementById("total-word").textContent = total === 1 ? "vote" : "votes";
    document.getElementById("poll-status").textContent = poll.status === "closed" ? "Closed" : "Open";
    root.dataset.version = String(poll.version);
  }

  function apply(poll) {
    if (typeof poll.version !== "number" || poll.version < state.version) return; // stale
    state = poll;
    render(poll, true);
    document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString();
  }

  function scheduleReconnect() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, attempt));
    const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    attempt += 1;
    const until = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      setConnection("offline", left > 0 ? "Reconnecting in " + left + " s" : "Reconnecting…");
    };
    tick();
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 250);
    retryTimer = setTimeout(() => {
      clearInterval(countdownTimer);
      connect();
    }, delay);
  }

  // A viewer who just voted in an after-vote poll sees the counts once the vote is counted
  // (a moment after it was accepted); the server decides that at connection time, so
  // ask again, a second apart, up to AWAIT_TRIES times.
  const AWAIT_TRIES = 20;
  let awaitTries = 0;
  function awaitingCount(message) {
    if (root.dataset.awaitResults !== "true" || !message.results_hidden || message.status !== "open") return false;
    if (awaitTries >= AWAIT_TRIES) return false;
    awaitTries += 1;
    setConnection("connecting", "Counting your vote…");
    const waiting = socket;
    waiting.onclose = null;
    waiting.close();
    socket = null;
    retryTimer = setTimeout(connect, 1000);
    return true;
  }

  function connect() {
    clearTimeout(retryTimer);
    setConnection("connecting", attempt === 0 ? "Connecting…" : "Reconnecting…");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/polls/" + pollId);

    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (message.type === "poll.snapshot") {
        attempt = 0; // a snapshot, not the handshake, proves the server is really back
        if (awaitingCount(message)) return;
        setConnection("live", "Live");
        apply(message);
      } else if (message.type === "poll.updated") {
        apply(message);
      } else if (message.type === "poll.removed") {
        gone = true;
      }
    };

    socket.onclose = (event) => {
      socket = null;
      if (event.code === 4404 || gone) {
        setConnection("gone", "Poll not found");
        return;
      }
      scheduleReconnect();
    };
  }

  // Without this script the page says to reload; with it, it is live.
  conn.hidden = false;
  document.getElementById("updated").textContent = "Live updates via WebSocket";
  render(state, false);
  connect();
})();
