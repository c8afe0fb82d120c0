// Runs a wasm32-wasip1 program under Node's WASI (V8, the engine Envoy runs
// the filter modules in): `node wasi-run.mjs program.wasm`. Used for
// examples/exec_profile.rs.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const wasi = new WASI({ version: 'preview1', args: [], env: {} });
const module = await WebAssembly.compile(await readFile(process.argv[2]));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
wasi.start(instance);
