// Small accessible components shared by the shell and plugin pages. Styling lives in
// src/styles.css (classes prefixed "ui-"); colours come from CSS variables, so both themes work.
import type { ComponentChildren, JSX } from "preact";
import { createContext } from "preact";
import { useCallback, useContext, useEffect, useId, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";

type ButtonProps = JSX.HTMLAttributes<HTMLButtonElement> & {
  variant?: "primary" | "secondary" | "danger" | "ghost";
  busy?: boolean;
  type?: "button" | "submit" | "reset";
  disabled?: boolean;
};

export function Button({ variant = "secondary", busy, disabled, type = "button", class: cls, children, ...rest }:
  ButtonProps) {
  return (
    <button {...rest} type={type} class={`ui-button ui-${variant} ${cls ?? ""}`} disabled={disabled || busy}
      aria-busy={busy ? "true" : undefined}>
      {children}
    </button>
  );
}

type InputProps = Omit<JSX.HTMLAttributes<HTMLInputElement>, "label" | "onInput"> & {
  label: string;
  name: string;
  value: string;
  onInput: (value: string) => void;
  type?: string;
  required?: boolean;
  autoComplete?: string;
  /** An error for this field (from formError(error, name)). */
  error?: string | null;
  hint?: string;
};

/** A labelled input with its error wired to aria-invalid/aria-describedby. */
export function Input({ label, name, value, onInput, error, hint, type = "text", ...rest }: InputProps) {
  const id = useId();
  const described = [error ? `${id}-error` : "", hint ? `${id}-hint` : ""].filter(Boolean).join(" ");
  return (
    <div class="ui-field">
      <label for={id}>{label}</label>
      <input {...rest} id={id} name={name} type={type} value={value}
        onInput={(event) => onInput((event.target as HTMLInputElement).value)}
        aria-invalid={error ? "true" : undefined} aria-describedby={described || undefined} />
      {hint && <small id={`${id}-hint`} class="ui-hint">{hint}</small>}
      {error && <small id={`${id}-error`} class="ui-field-error">{error}</small>}
    </div>
  );
}

/** The error text for field `name`, when `error` is a problem naming that field. */
export function fieldError(error: unknown, name: string): string | null {
  return error instanceof ApiError && error.field === name ? error.message : null;
}

/** A form-level error box (role=alert, so screen readers announce it). */
export function FormError({ error }: { error: unknown }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  const requestId = error instanceof ApiError ? error.problem.request_id : undefined;
  return (
    <div class="ui-form-error" role="alert">
      {message}
      {requestId && <small> (request {requestId})</small>}
    </div>
  );
}

/** A modal dialog on the native <dialog> element (focus trap, Escape and backdrop for free). */
export function Dialog({ open, title, onClose, children }: {
  open: boolean; title: string; onClose: () => void; children: ComponentChildren;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const id = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return (
    <dialog ref={ref} class="ui-dialog" aria-labelledby={`${id}-title`} onClose={onClose}>
      <div class="ui-dialog-head">
        <h2 id={`${id}-title`}>{title}</h2>
        <button type="button" class="ui-button ui-ghost" aria-label="Close" onClick={onClose}>×</button>
      </div>
      {children}
    </dialog>
  );
}

/** A list with a label and an empty state; items render through `render`. */
export function List<T>({ items, label, render, empty = "Nothing here yet", keyOf }: {
  items: T[]; label: string; render: (item: T) => ComponentChildren; keyOf: (item: T) => string;
  empty?: string;
}) {
  if (items.length === 0) return <p class="ui-empty">{empty}</p>;
  return (
    <ul class="ui-list" aria-label={label}>
      {items.map((item) => <li key={keyOf(item)}>{render(item)}</li>)}
    </ul>
  );
}

interface ToastItem { id: number; text: string; kind: "info" | "error" }
type Toast = (text: string, kind?: "info" | "error") => void;
const ToastContext = createContext<Toast>(() => {});

/** Show a short message: const toast = useToast(); toast("Saved"). */
export function useToast(): Toast {
  return useContext(ToastContext);
}

export function ToastProvider({ children }: { children: ComponentChildren }) {
  const [items, setItems] = useState<ToastItem[]>([]);
  const next = useRef(0);
  const show = useCallback<Toast>((text, kind = "info") => {
    const id = ++next.current;
    setItems((list) => [...list, { id, text, kind }]);
    setTimeout(() => setItems((list) => list.filter((item) => item.id !== id)), 5000);
  }, []);
  return (
    <ToastContext.Provider value={show}>
      {children}
      <div class="ui-toasts" role="status" aria-live="polite">
        {items.map((item) => <div key={item.id} class={`ui-toast ui-toast-${item.kind}`}>{item.text}</div>)}
      </div>
    </ToastContext.Provider>
  );
}

/** Load data for a page: const [data, error, reload] = useApi(() => api("/api/v1/..."), [deps]). */
export function useApi<T>(load: () => Promise<T>, deps: unknown[]): [T | undefined, unknown, () => void] {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setError(null);
    load().then((value) => live && setData(value), (reason) => live && setError(reason));
    return () => {
      live = false;
    };
    // `load` is a fresh closure each render: the caller's deps say when to run it again.
  }, [...deps, tick]);
  return [data, error, () => setTick((n) => n + 1)];
}
