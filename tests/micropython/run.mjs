// Runs a Python script under real MicroPython: the official WebAssembly port
// (npm @micropython/micropython-webassembly-pyscript, installed by scripts/bootstrap).
//
//   node tests/micropython/run.mjs [--heap BYTES] [--lib DIR]... SCRIPT.py
//
// Every *.py and *.mpy file of each --lib directory is copied into the port's in-memory
// filesystem under /lib (on sys.path), so `import cbor` imports our firmware
// module there. The script's stdout goes to stdout; an uncaught exception is
// printed to stderr and the exit status is 1. Nothing else is written.
import fs from "node:fs";
import path from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const args = process.argv.slice(2);
const libs = [];
let heapsize = 8 * 1024 * 1024;
let script = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--lib") libs.push(args[++i]);
  else if (args[i] === "--heap") heapsize = Number(args[++i]);
  else script = args[i];
}
if (!script) {
  process.stderr.write("usage: run.mjs [--heap BYTES] [--lib DIR]... SCRIPT.py\n");
  process.exit(2);
}

const mp = await loadMicroPython({
  heapsize,
  pystack: 16 * 1024,
  linebuffer: false,
  stdout: (data) => process.stdout.write(data),
  stderr: (data) => process.stderr.write(data),
});
try {
  mp.FS.mkdir("/lib");
} catch {
  // already there
}
for (const dir of libs) {
  for (const name of fs.readdirSync(dir)) {
    if (name.endsWith(".py") || name.endsWith(".mpy")) mp.FS.writeFile("/lib/" + name, fs.readFileSync(path.join(dir, name)));
  }
}
try {
  mp.runPython("import sys\nif '/lib' not in sys.path: sys.path.append('/lib')\n");
  mp.runPython(fs.readFileSync(script, "utf8"));
} catch (err) {
  process.stderr.write(String(err && err.message ? err.message : err) + "\n");
  process.exit(1);
}
