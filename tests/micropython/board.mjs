// A virtual MicroPython board: the official WebAssembly port's REPL on a serial line, so that
// mpremote (and anything else that speaks the raw REPL) can drive it as it drives an ESP32.
//
//   node tests/micropython/board.mjs --fd N --flash DIR [--heap BYTES]
//
// The serial line is file descriptor N, inherited from the parent: the master side of a pty
// whose slave (/dev/pts/M) is what mpremote opens (tests/virtual_board.py sets this up).
// Bytes read from it go to the port's REPL one at a time (replProcessChar); what the port
// prints goes back. The board's flash is DIR: loaded into the port's filesystem at boot and
// mounted at "/" (so `os.listdir('/')` shows the flash only, and /lib is on sys.path), and
// written back to DIR after every command the REPL runs and on exit, so a test can inspect it.
//
// What the wrapper adds to the port, as a real board behaves:
// - soft reset (Ctrl-D on an empty line): "MPY: soft reboot", then a fresh interpreter over the
//   same flash, in the REPL mode it was in (raw stays raw, as mpremote expects);
// - hard reset (`machine.reset()`, mpremote's `reset`): a fresh interpreter in the friendly REPL,
//   with the boot banner; nothing more is printed by the old one;
// - raw-paste mode (Ctrl-E "A" Ctrl-A at the raw prompt) is refused with "R\x00", so mpremote
//   falls back to the standard raw REPL (the port's event-driven REPL would block on it).
// boot.py and main.py are never run (there is no radio here, and a main.py that loops would
// block the board); code the REPL runs must finish, as Ctrl-C cannot interrupt it.
// SIGTERM ends the board: the flash is written back and the process exits 0.
import fs from "node:fs";
import path from "node:path";
import tty from "node:tty";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const RAW_BANNER = "raw REPL; CTRL-B to exit\r\n";
const FLASH = "/flash"; // where the flash lives in the port's filesystem
const BOARD_VFS = fs.readFileSync(new URL("board_vfs.py", import.meta.url), "utf8");

const args = process.argv.slice(2);
let fd = null;
let flashDir = null;
let heapsize = 2 * 1024 * 1024;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--fd") fd = Number(args[++i]);
  else if (args[i] === "--flash") flashDir = args[++i];
  else if (args[i] === "--heap") heapsize = Number(args[++i]);
}
if (fd === null || flashDir === null) {
  process.stderr.write("usage: board.mjs --fd N --flash DIR [--heap BYTES]\n");
  process.exit(2);
}

// ------------------------------------------------------------------ the flash, on the host

function loadTree(mp, hostDir, boardDir) {
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const host = path.join(hostDir, entry.name);
    const board = boardDir + "/" + entry.name;
    if (entry.isDirectory()) {
      mp.FS.mkdir(board);
      loadTree(mp, host, board);
    } else if (entry.isFile()) {
      mp.FS.writeFile(board, fs.readFileSync(host));
    }
  }
}

function boardTree(mp, boardDir, out, prefix) {
  for (const name of mp.FS.readdir(boardDir)) {
    if (name === "." || name === "..") continue;
    const board = boardDir + "/" + name;
    const rel = prefix ? prefix + "/" + name : name;
    if (mp.FS.isDir(mp.FS.stat(board).mode)) {
      out.dirs.push(rel);
      boardTree(mp, board, out, rel);
    } else {
      out.files.set(rel, mp.FS.readFile(board));
    }
  }
  return out;
}

function saveFlash(mp) {
  const tree = boardTree(mp, FLASH, { dirs: [], files: new Map() }, "");
  const keep = new Set([...tree.dirs, ...tree.files.keys()]);
  const prune = (hostDir, prefix) => {
    for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
      const rel = prefix ? prefix + "/" + entry.name : entry.name;
      const host = path.join(hostDir, entry.name);
      if (!keep.has(rel)) fs.rmSync(host, { recursive: true, force: true });
      else if (entry.isDirectory()) prune(host, rel);
    }
  };
  prune(flashDir, "");
  for (const dir of tree.dirs) fs.mkdirSync(path.join(flashDir, dir), { recursive: true });
  for (const [rel, data] of tree.files) {
    const host = path.join(flashDir, rel);
    if (!fs.existsSync(host) || !Buffer.from(data).equals(fs.readFileSync(host))) fs.writeFileSync(host, data);
  }
}

// ------------------------------------------------------------------ the interpreter

let mp = null;
let muted = false; // after machine.reset(): the old interpreter prints nothing more
let pending = []; // output bytes not yet written to the line
let resetRequested = false;
let rawMode = false; // tracked from what the port prints
let tail = ""; // the last bytes printed, to find prompts

function emit(bytes) {
  for (const b of bytes) {
    pending.push(b);
    tail = (tail + String.fromCharCode(b)).slice(-RAW_BANNER.length - 1);
    if (tail.endsWith(RAW_BANNER)) rawMode = true;
    else if (tail.endsWith('Type "help()" for more information.\r\n')) rawMode = false;
  }
}

function flush() {
  if (pending.length === 0) return;
  const data = Buffer.from(pending);
  pending = [];
  let off = 0;
  while (off < data.length) {
    try {
      off += fs.writeSync(fd, data, off);
    } catch (err) {
      if (err.code !== "EAGAIN") throw err;
    }
  }
}

function text(s) {
  emit(Buffer.from(s, "latin1"));
}

async function boot({ raw }) {
  const old = mp;
  muted = true; // the port's own start-up output is replaced by ours below
  mp = await loadMicroPython({
    heapsize,
    pystack: 16 * 1024,
    linebuffer: false,
    stdout: (data) => {
      if (!muted) emit(data);
    },
    stderr: (data) => {
      if (!muted) emit(data);
    },
  });
  mp.FS.mkdir(FLASH);
  if (old === null) loadTree(mp, flashDir, FLASH);
  else {
    const tree = boardTree(old, FLASH, { dirs: [], files: new Map() }, "");
    for (const dir of tree.dirs) mp.FS.mkdir(FLASH + "/" + dir);
    for (const [rel, data] of tree.files) mp.FS.writeFile(FLASH + "/" + rel, data);
  }
  mp.registerJsModule("machine", {
    reset: () => {
      resetRequested = true;
      muted = true;
    },
  });
  // The flash at "/" (board_vfs.py), run in a namespace of its own: the REPL's globals stay empty.
  mp.globals.set("_board_vfs", BOARD_VFS);
  mp.runPython(
    "_ns = {}\nexec(_board_vfs, _ns)\n" +
      `_ns['mount_flash']('${FLASH}')\n` +
      "import sys\nif '/lib' not in sys.path: sys.path.append('/lib')\n" +
      "del _ns, _board_vfs, sys\n",
  );
  if (raw) {
    mp.replInit();
    mp.replProcessChar(0x01); // into the raw REPL, as it was
    muted = false;
    text(RAW_BANNER + ">");
  } else {
    muted = false;
    mp.replInit(); // the port's own banner and prompt
  }
  rawMode = raw;
}

// ------------------------------------------------------------------ the line

// Raw-paste request: Ctrl-E, "A", Ctrl-A at the raw prompt.
let pasteRequest = 0;

async function handle(byte) {
  const atRawPrompt = rawMode && (tail.endsWith(RAW_BANNER + ">") || tail.endsWith("\x04>"));
  if (pasteRequest > 0 || (byte === 0x05 && atRawPrompt)) {
    const expected = [0x05, 0x41, 0x01][pasteRequest];
    if (byte === expected) {
      pasteRequest += 1;
      if (pasteRequest === 3) {
        pasteRequest = 0;
        emit([0x52, 0x00]); // "R\x00": understood, not supported
      }
      return;
    }
    pasteRequest = 0; // not a raw-paste request after all: the byte is the REPL's
  }
  const ret = mp.replProcessChar(byte);
  if (resetRequested) {
    resetRequested = false;
    saveFlash(mp);
    await boot({ raw: false });
  } else if (ret !== 0) {
    // Ctrl-D on an empty line: soft reset, keeping the REPL mode.
    const raw = rawMode;
    text("MPY: soft reboot\r\n");
    saveFlash(mp);
    await boot({ raw });
  } else if (byte === 0x04) {
    saveFlash(mp); // a command ran: the host copy of the flash follows
  }
}

await boot({ raw: false });
flush();

process.on("SIGTERM", () => {
  saveFlash(mp);
  process.exit(0);
});

// The line: the pty's master, read through libuv's poll (a blocking read in the thread pool
// would keep the process from exiting). Bytes are handled strictly in order.
const line = new tty.ReadStream(fd);
let queue = Promise.resolve();
line.on("data", (chunk) => {
  queue = queue.then(async () => {
    for (const byte of chunk) await handle(byte);
    flush();
  });
});
line.on("error", (err) => {
  process.stderr.write(`board: the line failed: ${err.message}\n`);
  process.exit(1);
});
