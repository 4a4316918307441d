import type { ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";
import { FormError } from "../lib/ui";

/** A component whose code is a separate chunk, fetched on first render. */
export function lazy<P extends object>(load: () => Promise<ComponentType<P>>): ComponentType<P> {
  let cached: ComponentType<P> | null = null;
  return function Lazy(props: P) {
    const [component, setComponent] = useState<ComponentType<P> | null>(() => cached);
    const [error, setError] = useState<unknown>(null);
    useEffect(() => {
      if (cached) return;
      load().then((loaded) => {
        cached = loaded;
        setComponent(() => loaded);
      }, setError);
    }, []);
    if (error) return <FormError error={new Error("This page failed to load; reload to try again")} />;
    if (!component) return <p class="ui-loading" role="status">Loading…</p>;
    const Component = component;
    return <Component {...props} />;
  };
}
