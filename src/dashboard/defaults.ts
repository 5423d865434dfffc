// Where the dashboard listens unless told otherwise; apart from the rest of the dashboard, so
// that the command line can show them without loading the web server.

export const DEFAULT_DASHBOARD_PORT = 8025;
export const DEFAULT_DASHBOARD_HOST = '127.0.0.1';
