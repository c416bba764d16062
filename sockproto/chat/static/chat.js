// sockproto web chat: one WebSocket to /ws, JSON events (docs/web-chat.rst).
// Text from the server is only ever put in the page with textContent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const messages = $("messages"), say = $("say"), status = $("status");
  let socket = null, me = "", room = "", lastLine = "", retry = 0, everConnected = false;
  const topics = new Map();  // room -> its topic event (the page shows the current room's)

  function showTopic() {
    const topic = topics.get(room), line = $("topic");
    line.hidden = !(topic && topic.topic);
    line.textContent = topic ? topic.topic : "";
    line.title = topic && topic.topic ? `set by ${topic.nick} at ${timeText(topic.time)}` : "";
  }
  // The server's --max-line-length in bytes of UTF-8 (its "limits" event says); a longer line is not sent.
  let maxLineBytes = 512;
  const utf8 = new TextEncoder();

  function nickColour(nick) {
    let hash = 0;
    for (const c of nick) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
    return `hsl(${hash % 360}, 60%, 35%)`;
  }

  // HH:MM:SS on a 24-hour clock, as line clients see it, whatever the browser's locale.
  function timeText(seconds) {
    const when = seconds ? new Date(seconds * 1000) : new Date();
    const two = (n) => String(n).padStart(2, "0");
    return `${two(when.getHours())}:${two(when.getMinutes())}:${two(when.getSeconds())}`;
  }

  function add(kind, parts, seconds) {
    const item = document.createElement("li");
    item.className = kind;
    const stamp = document.createElement("span");
    stamp.className = "time";
    stamp.textContent = timeText(seconds);
    item.append(stamp);
    for (const [cls, text, colour] of parts) {
      const span = document.createElement("span");
      if (cls) span.className = cls;
      if (colour) span.style.color = colour;
      span.textContent = text;
      item.append(span);
    }
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    messages.append(item);
    while (messages.children.length > 2000) messages.firstChild.remove();
    if (atBottom) item.scrollIntoView({ block: "end" });
  }

  function counted(count, noun) {
    return `${count} ${noun}${count === 1 ? "" : "s"}`;
  }

  // A long list comes in pieces: part 1 (or a list without parts) replaces the list, the others add to it.
  function listFor(id, event) {
    const list = $(id);
    if (!event.part || event.part === 1) list.replaceChildren();
    return list;
  }

  function show(event) {
    switch (event.type) {
      case "message":
        add("message", [["nick", `<${event.nick}>`, nickColour(event.nick)], ["text", event.text]], event.time);
        break;
      case "me":
        add("me", [["nick", `* ${event.nick}`, nickColour(event.nick)], ["text", event.text]], event.time);
        break;
      case "private":
        if (event.from) add("private", [["nick", `*${event.from}*`, nickColour(event.from)], ["text", event.text]], event.time);
        else add("private mine", [["nick", `→ *${event.to}*`], ["text", event.text]], event.time);
        break;
      case "notice":
        add("notice", [["text", event.text]]);
        if (/Please log in/.test(event.text)) $("login-form").hidden = false;
        break;
      case "error":
        add("error", [["text", event.text]]);
        break;
      case "limits":
        if (event.line > 0) maxLineBytes = event.line;
        break;
      case "history":
        add("notice", [["text", `last ${counted(event.entries.length, "message")} in ${event.room}:`]]);
        for (const entry of event.entries) show(entry);
        add("notice", [["text", `end of history of ${event.room}`]]);
        break;
      case "members":
        if (event.room === room) {
          const list = listFor("members", event);
          const operators = new Set(event.operators || []), voiced = new Set(event.voiced || []);
          for (const nick of event.nicks) {
            const li = document.createElement("li");
            const button = document.createElement("button");
            // IRC's marks: @ an operator of the room, + voiced (may speak when it is moderated).
            const mark = operators.has(nick) ? "@" : voiced.has(nick) ? "+" : "";
            button.textContent = mark + nick;
            if (mark) button.className = mark === "@" ? "operator" : "voiced";
            button.style.color = nickColour(nick);
            button.title = `Private message to ${nick}`;
            button.addEventListener("click", () => { say.value = `/msg ${nick} `; say.focus(); });
            li.append(button);
            list.append(li);
          }
        }
        break;
      case "rooms": {
        const list = listFor("rooms", event);
        for (const r of event.rooms) {
          const li = document.createElement("li");
          const button = document.createElement("button");
          button.textContent = `${r.name} (${r.count})`;
          if (r.topic) button.title = r.topic;
          if (r.name === room) { button.className = "current"; button.setAttribute("aria-current", "true"); }
          button.addEventListener("click", () => { if (r.name !== room) send({ type: "say", text: `/join ${r.name}` }); });
          li.append(button);
          list.append(li);
        }
        break;
      }
      case "topic":
        topics.set(event.room, event);
        showTopic();
        break;
      case "state":
        me = event.nick;
        room = event.room;
        showTopic();
        $("who").textContent = me ? `you are ${me}` : "";
        $("room-name").textContent = room || "(no room)";
        if (me) $("login-form").hidden = true;
        break;
    }
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    add("error", [["text", "not connected; the line was not sent"]]);
    return false;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/ws`);
    socket.addEventListener("open", () => {
      retry = 0;
      status.textContent = "connected";
      status.className = "";
      if (everConnected) add("notice", [["text", "reconnected"]]);
      everConnected = true;
    });
    socket.addEventListener("message", (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      show(event);
    });
    socket.addEventListener("close", () => {
      const delay = Math.min(30, 2 ** retry);
      retry += 1;
      status.textContent = `disconnected; reconnecting in ${delay} s`;
      status.className = "down";
      add("error", [["text", `connection lost; reconnecting in ${delay} s`]]);
      $("members").replaceChildren();
      setTimeout(connect, delay * 1000);
    });
  }

  $("say-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = say.value;
    if (!text.trim()) return;
    // Bytes, not characters: 200 of "中" are 600 bytes.  Kept in the input, to shorten.
    const bytes = utf8.encode(text).length;
    if (bytes > maxLineBytes) {
      add("error", [["text", `line too long (${bytes} bytes in UTF-8, at most ${maxLineBytes}): not sent`]]);
      return;
    }
    if (!send({ type: "say", text })) return;
    lastLine = text;
    // The server never sends a sender its own line back: show it here.
    if (!text.startsWith("/") || text.startsWith("//")) {
      const shown = text.startsWith("//") ? text.slice(1) : text;
      add("message mine", [["nick", `<${me}>`, nickColour(me)], ["text", shown]]);
    } else if (/^\/me /.test(text)) {
      add("me mine", [["nick", `* ${me}`, nickColour(me)], ["text", text.slice(4)]]);
    }
    say.value = "";
  });
  say.addEventListener("keydown", (e) => {
    if (e.key === "ArrowUp" && !say.value && lastLine) { say.value = lastLine; e.preventDefault(); }
  });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    let name = $("join-room").value.trim().toLowerCase();
    if (!name) return;
    if (!name.startsWith("#")) name = `#${name}`;
    send({ type: "say", text: `/join ${name}` });
    $("join-room").value = "";
    say.focus();
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send({ type: "login", name: $("login-name").value, password: $("login-password").value });
    $("login-password").value = "";
  });
  setInterval(() => { if (me) send({ type: "rooms" }); }, 30000);
  connect();
  say.focus();
})();
