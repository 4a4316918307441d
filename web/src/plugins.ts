// Every plugin's pages, found at build time: plugins/<name>/ui/index.tsx, each a lazy chunk.
import type { PluginUI } from "./lib/plugin";

const modules = import.meta.glob<{ default: PluginUI }>("../../plugins/*/ui/index.tsx");

const loaders = new Map<string, () => Promise<{ default: PluginUI }>>();
for (const [file, load] of Object.entries(modules)) {
  const name = /plugins\/([^/]+)\/ui\/index\.tsx$/.exec(file)?.[1];
  if (name) loaders.set(name, load);
}

const loaded = new Map<string, Promise<PluginUI>>();

/** Whether this build carries a front end for plugin `name`. */
export function hasUI(name: string): boolean {
  return loaders.has(name);
}

/** The plugin's page definitions (loads its chunk once). */
export function loadPluginUI(name: string): Promise<PluginUI> {
  let promise = loaded.get(name);
  if (!promise) {
    const load = loaders.get(name);
    if (!load) return Promise.reject(new Error(`this build has no pages for plugin ${name}`));
    promise = load().then((module) => module.default);
    promise.catch(() => loaded.delete(name)); // a failed chunk download may succeed next time
    loaded.set(name, promise);
  }
  return promise;
}
