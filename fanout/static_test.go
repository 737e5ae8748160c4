package fanout

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStaticFiles checks what the demo page loads: the right Content-Type,
// a content ETag that turns a revalidation into 304, and nothing else served.
func TestStaticFiles(t *testing.T) {
	t.Parallel()
	h := staticHandler()
	get := func(path string, header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	for path, ctype := range map[string]string{
		"/static/app.js":   "text/javascript; charset=utf-8",
		"/static/app.css":  "text/css; charset=utf-8",
		"/static/icon.svg": "image/svg+xml",
	} {
		w := get(path)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != ctype || w.Body.Len() == 0 {
			t.Errorf("%s: %d %q, %d bytes; want 200 %q", path, w.Code, w.Header().Get("Content-Type"), w.Body.Len(), ctype)
			continue
		}
		etag := w.Header().Get("ETag")
		if !strings.HasPrefix(etag, `"`) || w.Header().Get("Cache-Control") != "no-cache" ||
			w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", path, w.Header())
		}
		if w := get(path, "If-None-Match", etag); w.Code != http.StatusNotModified {
			t.Errorf("%s with If-None-Match %s: %d, want 304", path, etag, w.Code)
		}
	}
	for _, path := range []string{"/static/", "/static/nope.js", "/static/../index.html", "/static/static/app.js"} {
		if w := get(path); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, w.Code)
		}
	}
}

// TestPageLoadsItsFiles checks that the page refers to files that exist, and
// that the settings block is valid JSON for app.js.
func TestPageLoadsItsFiles(t *testing.T) {
	t.Parallel()
	page, err := renderPage(pageConfig{PublicIngestAddr: `relay.example:7071`})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{`src="/static/app.js"`, `href="/static/app.css"`, `href="/static/icon.svg"`,
		`<script id="relay-config" type="application/json">{"publicIngestAddr":"relay.example:7071"}</script>`} {
		if !strings.Contains(string(page), ref) {
			t.Errorf("page lacks %s", ref)
		}
	}
}
