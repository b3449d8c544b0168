// Where tokend answers. This page calls it cross-origin, so tokend must list this page's
// origin in TOKEND_CORS_ORIGINS, e.g. TOKEND_CORS_ORIGINS=http://127.0.0.1:8000.
window.TOKEND_API = "http://127.0.0.1:8080";
