// "@sygmax/web": everything a plugin page may import from the shell. Import only from here,
// never from web/src paths, so the shell can move its files freely.
export { api, ApiError, csrfToken, refreshSession } from "./api";
export type { Problem, RequestOptions } from "./api";
export { connect, ReconnectingSocket } from "./ws";
export type { Frame, SocketOptions, SocketState } from "./ws";
export { definePlugin, matchPath, navigate } from "./plugin";
export type { PageDefinition, PageProps, PluginUI } from "./plugin";
export { useCan, useSession, useWorkspace } from "./session";
export type { EnabledPlugin, Session, UIPage, User, Workspace } from "./session";
export { useLocation } from "./router";
export { Button, Dialog, FormError, Input, List, fieldError, useApi, useToast } from "./ui";
