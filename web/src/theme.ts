// Light/dark theme: follows prefers-color-scheme until the user picks one with the toggle.
const KEY = "sygmax-theme";
export type Theme = "light" | "dark";

export function preferredTheme(): Theme {
  const stored = localStorage.getItem(KEY);
  if (stored === "light" || stored === "dark") return stored;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function applyTheme(theme: Theme, remember = false): void {
  document.documentElement.dataset.theme = theme;
  if (remember) localStorage.setItem(KEY, theme);
}
