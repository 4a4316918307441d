// A small History-API router: the current location as a hook, and same-origin link clicks
// turned into client-side navigation (so plain <a href="/chats"> works in page code).
import { useEffect, useState } from "preact/hooks";

export interface Location {
  path: string;
  query: Record<string, string>;
}

function current(): Location {
  return { path: location.pathname, query: Object.fromEntries(new URLSearchParams(location.search)) };
}

export function useLocation(): Location {
  const [value, setValue] = useState(current);
  useEffect(() => {
    const update = () => setValue(current());
    addEventListener("popstate", update);
    return () => removeEventListener("popstate", update);
  }, []);
  return value;
}

/** Paths the server answers itself: never handled by the client router. */
const SERVER_PATHS = /^\/(api|ws|healthz|readyz|metrics|docs)(\/|$)/;

export function interceptLinks(): void {
  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey ||
        event.altKey) return;
    const anchor = (event.target as Element | null)?.closest?.("a");
    if (!anchor || anchor.target || anchor.hasAttribute("download")) return;
    const url = new URL(anchor.href, location.href);
    if (url.origin !== location.origin || SERVER_PATHS.test(url.pathname)) return;
    event.preventDefault();
    if (url.pathname + url.search !== location.pathname + location.search) {
      history.pushState(null, "", url.pathname + url.search + url.hash);
      dispatchEvent(new PopStateEvent("popstate"));
    }
  });
}
