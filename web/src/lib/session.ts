// What the shell knows about the signed-in user, shared with plugin pages through hooks.
import { createContext } from "preact";
import { useContext } from "preact/hooks";

export interface User {
  id: string;
  email: string;
  display_name: string;
  is_admin: boolean;
}

export interface Workspace {
  id: string;
  name: string;
  created_at: string;
  updated_at: string;
  role: string;
  role_id: string | null;
  permissions: string[];
}

export interface UIPage {
  path: string;
  title: string;
  icon: string;
}

export interface EnabledPlugin {
  name: string;
  version: string;
  description: string;
  depends_on: string[];
  permissions: { code: string; description: string }[];
  ui_pages: UIPage[];
}

export interface Session {
  user: User;
  /** The workspace chosen in the switcher (null while the user belongs to none). */
  workspace: Workspace | null;
  workspaces: Workspace[];
  plugins: EnabledPlugin[];
  selectWorkspace(id: string): void;
  /** Reload the user, workspaces and plugins from the server (after a change). */
  reload(): Promise<void>;
  signOut(): Promise<void>;
}

export const SessionContext = createContext<Session | null>(null);

/** The signed-in session; plugin pages are only rendered inside one. */
export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession() outside the signed-in shell");
  return session;
}

/** Shortcut: the current workspace (null when the user has none yet). */
export function useWorkspace(): Workspace | null {
  return useSession().workspace;
}

/** Does the user hold `permission` in the current workspace? */
export function useCan(permission: string): boolean {
  const workspace = useSession().workspace;
  return !!workspace && workspace.permissions.includes(permission);
}
