// Command dashrender draws a Grafana dashboard's panels from a real
// Prometheus without Grafana: it reads the dashboard JSON, runs each panel's
// queries through Prometheus's HTTP API (query_range), and writes one static
// HTML page with inline SVG (no JavaScript, no external files), laid out on
// the dashboard's own 24-column grid. With -png it also screenshots the page
// with headless Chromium.
//
// It understands what relay's dashboard (deploy/grafana/relay-dashboard.json)
// uses: rows, timeseries and stat panels, legendFormat, units short,
// percentunit, bytes and Bps, thresholds, value mappings, and the variables
// $job, $instance and $__rate_interval. It is not a Grafana: the picture
// shows the dashboard's queries on real data, drawn by this tool.
//
//	go run . -dashboard ../../deploy/grafana/relay-dashboard.json \
//	    -prometheus http://127.0.0.1:28090 -range 30m -out dash.html -png dash.png
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	var (
		dashFile = flag.String("dashboard", "deploy/grafana/relay-dashboard.json", "Grafana dashboard JSON")
		promURL  = flag.String("prometheus", "http://127.0.0.1:9090", "Prometheus base URL")
		rng      = flag.Duration("range", 30*time.Minute, "time range ending at -end")
		endFlag  = flag.String("end", "", "end of the range, RFC 3339 (default now)")
		points   = flag.Int("points", 240, "points per series (sets the query step)")
		rateIvl  = flag.String("rate-interval", "1m", "value of $__rate_interval (Grafana: 4 scrape intervals)")
		vars     = flag.String("vars", "job=.*,instance=.*", "dashboard variables, name=value comma-separated")
		width    = flag.Int("width", 1600, "page width in pixels")
		out      = flag.String("out", "dashboard.html", "HTML file to write")
		png      = flag.String("png", "", "also screenshot the page into this PNG with headless Chromium")
		note     = flag.String("note", "", "a line under the title (e.g. what the data is)")
	)
	flag.Parse()
	end := time.Now()
	if *endFlag != "" {
		t, err := time.Parse(time.RFC3339, *endFlag)
		if err != nil {
			fatal(err)
		}
		end = t
	}
	d, err := loadDashboard(*dashFile)
	if err != nil {
		fatal(err)
	}
	subst := map[string]string{"__rate_interval": *rateIvl}
	for _, kv := range strings.Split(*vars, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			subst[k] = v
		}
	}
	q := &prom{base: strings.TrimRight(*promURL, "/"), start: end.Add(-*rng), end: end,
		step: max(time.Second, *rng/time.Duration(max(*points, 2))), vars: subst}
	page, height, err := render(context.Background(), d, q, *width, *note)
	if err != nil {
		fatal(err)
	}
	if err := os.WriteFile(*out, []byte(page), 0o644); err != nil {
		fatal(err)
	}
	if *png != "" {
		if err := screenshot(*out, *png, *width, height); err != nil {
			fatal(err)
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "dashrender:", err)
	os.Exit(1)
}

// The parts of a Grafana dashboard the tool reads.
type dashboard struct {
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Type        string                   `json:"type"`
	Title       string                   `json:"title"`
	GridPos     struct{ H, W, X, Y int } `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit       string   `json:"unit"`
			Min        *float64 `json:"min"`
			Max        *float64 `json:"max"`
			Thresholds struct {
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
			Mappings []struct {
				Type    string `json:"type"`
				Options map[string]struct {
					Text  string `json:"text"`
					Color string `json:"color"`
				} `json:"options"`
			} `json:"mappings"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

func loadDashboard(file string) (*dashboard, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &d, nil
}

// prom runs range queries against one Prometheus.
type prom struct {
	base       string
	start, end time.Time
	step       time.Duration
	vars       map[string]string
}

type series struct {
	labels map[string]string
	t      []float64 // unix seconds
	v      []float64
}

// expand replaces $name and ${name} with the variables' values, longest
// names first so $instance is not read as $in….
func expand(expr string, vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, k := range names {
		expr = strings.ReplaceAll(expr, "${"+k+"}", vars[k])
		expr = strings.ReplaceAll(expr, "$"+k, vars[k])
	}
	return expr
}

func (p *prom) queryRange(ctx context.Context, expr string) ([]series, error) {
	v := url.Values{}
	v.Set("query", expand(expr, p.vars))
	v.Set("start", strconv.FormatInt(p.start.Unix(), 10))
	v.Set("end", strconv.FormatInt(p.end.Unix(), 10))
	v.Set("step", strconv.FormatFloat(p.step.Seconds(), 'f', -1, 64))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/api/v1/query_range?"+v.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %q: HTTP %d: %v", expr, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, r.Error)
	}
	var out []series
	for _, res := range r.Data.Result {
		s := series{labels: res.Metric}
		for _, pt := range res.Values {
			ts, _ := pt[0].(float64)
			str, _ := pt[1].(string)
			f, err := strconv.ParseFloat(str, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				continue
			}
			s.t = append(s.t, ts)
			s.v = append(s.v, f)
		}
		out = append(out, s)
	}
	return out, nil
}

// legend fills a legendFormat's {{label}} placeholders.
func legend(format string, labels map[string]string) string {
	if format == "" {
		var parts []string
		for k, v := range labels {
			if k != "__name__" {
				parts = append(parts, k+"="+strconv.Quote(v))
			}
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ", ") + "}"
	}
	out := format
	for {
		i := strings.Index(out, "{{")
		if i < 0 {
			break
		}
		j := strings.Index(out[i:], "}}")
		if j < 0 {
			break
		}
		name := strings.TrimSpace(out[i+2 : i+j])
		out = out[:i] + labels[name] + out[i+j+2:]
	}
	return strings.TrimSpace(out)
}

// format prints v in a Grafana unit.
func format(v float64, unit string) string {
	switch unit {
	case "percentunit":
		return trim(v*100, 1) + "%"
	case "bytes":
		return scaled(v, 1024, []string{"B", "KiB", "MiB", "GiB", "TiB"})
	case "Bps", "binBps":
		return scaled(v, 1024, []string{"B/s", "KiB/s", "MiB/s", "GiB/s"})
	default:
		return scaled(v, 1000, []string{"", "k", "M", "G", "T"})
	}
}

func scaled(v, base float64, units []string) string {
	i := 0
	for math.Abs(v) >= base && i < len(units)-1 {
		v /= base
		i++
	}
	sep := ""
	if base == 1024 {
		sep = " "
	}
	return trim(v, 2) + sep + units[i]
}

func trim(v float64, prec int) string {
	if math.Abs(v) >= 100 {
		prec = 0
	} else if math.Abs(v) >= 10 && prec > 1 {
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		out = append(out, v)
	}
	return out
}

// Grafana's classic palette, and its named colours.
var palette = []string{"#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A6", "#705DA0", "#508642", "#CCA300", "#447EBC", "#C15C17"}

func color(name string) string {
	switch name {
	case "green":
		return "#56A64B"
	case "red":
		return "#E02F44"
	case "orange":
		return "#FF9830"
	case "yellow":
		return "#F2CC0C"
	case "blue":
		return "#3274D9"
	}
	return name
}

const (
	rowPx  = 30 // Grafana's grid row height
	gapPx  = 8
	headPx = 64
)

func render(ctx context.Context, d *dashboard, q *prom, width int, note string) (string, int, error) {
	colW := float64(width-gapPx) / 24
	var b strings.Builder
	bottom := 0
	for _, p := range d.Panels {
		x := int(float64(p.GridPos.X)*colW) + gapPx
		y := p.GridPos.Y*rowPx + headPx
		w := int(float64(p.GridPos.W)*colW) - gapPx
		h := p.GridPos.H*rowPx - gapPx
		bottom = max(bottom, y+h+gapPx)
		switch p.Type {
		case "row":
			fmt.Fprintf(&b, `<div class="row" style="left:%dpx;top:%dpx;width:%dpx">%s</div>`, x, y, w, html.EscapeString(p.Title))
			continue
		case "timeseries", "stat":
		default:
			return "", 0, fmt.Errorf("panel %q: type %s is not drawn by this tool", p.Title, p.Type)
		}
		var all []series
		var names []string
		for _, t := range p.Targets {
			ss, err := q.queryRange(ctx, t.Expr)
			if err != nil {
				return "", 0, fmt.Errorf("panel %q: %w", p.Title, err)
			}
			sort.Slice(ss, func(i, j int) bool {
				return legend(t.LegendFormat, ss[i].labels) < legend(t.LegendFormat, ss[j].labels)
			})
			for _, s := range ss {
				all = append(all, s)
				names = append(names, legend(t.LegendFormat, s.labels))
			}
		}
		fmt.Fprintf(&b, `<div class="panel" style="left:%dpx;top:%dpx;width:%dpx;height:%dpx"><div class="title">%s</div>`,
			x, y, w, h, html.EscapeString(p.Title))
		if p.Type == "stat" {
			b.WriteString(stat(p, all, names, w, h-24))
		} else {
			b.WriteString(timeseries(p, q, all, names, w, h-24))
		}
		b.WriteString(`</div>`)
	}
	title := html.EscapeString(d.Title)
	head := fmt.Sprintf(`<!doctype html><html><head><meta charset="utf-8"><title>%s</title><style>
body{margin:0;background:#111217;color:#ccccdc;font:12px/1.3 Inter,Helvetica,Arial,sans-serif;width:%dpx;height:%dpx;position:relative}
.hdr{position:absolute;left:%dpx;top:8px;right:8px}.hdr h1{font-size:18px;margin:0;color:#fff;font-weight:500}.hdr p{margin:4px 0 0;color:#8e8e9e}
.row{position:absolute;font-size:14px;font-weight:500;color:#fff;padding-top:8px}
.panel{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:2px;overflow:hidden}
.title{height:24px;line-height:24px;padding:0 8px;font-weight:500;color:#fff;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
svg text{fill:#8e8e9e;font-size:10px}.lg{fill:#ccccdc}
</style></head><body><div class="hdr"><h1>%s</h1><p>%s · %s – %s UTC · drawn by tools/dashrender from the dashboard JSON and Prometheus query_range, not by Grafana</p></div>`,
		title, width, bottom, gapPx, title, html.EscapeString(note),
		q.start.UTC().Format("2006-01-02 15:04"), q.end.UTC().Format("15:04"))
	return head + b.String() + "</body></html>\n", bottom, nil
}

func stat(p panel, all []series, names []string, w, h int) string {
	def := p.FieldConfig.Defaults
	var b strings.Builder
	n := max(len(all), 1)
	cw := w / n
	for i := 0; i < n; i++ {
		text, bg := "no data", "#2c3235"
		if i < len(all) && len(all[i].v) > 0 {
			v := all[i].v[len(all[i].v)-1]
			text, bg = format(v, def.Unit), "#56A64B"
			for _, st := range def.Thresholds.Steps {
				if st.Value == nil || v >= *st.Value {
					bg = color(st.Color)
				}
			}
			for _, m := range def.Mappings {
				if o, ok := m.Options[strconv.FormatFloat(v, 'f', -1, 64)]; ok && m.Type == "value" {
					text, bg = o.Text, color(o.Color)
				}
			}
		}
		name := ""
		if i < len(names) && len(all) > 1 {
			name = names[i]
		}
		fmt.Fprintf(&b, `<div style="position:absolute;left:%dpx;top:24px;width:%dpx;height:%dpx;background:%s;color:#fff;text-align:center">`+
			`<div style="font-size:11px;padding-top:4px">%s</div><div style="font-size:%dpx;font-weight:500">%s</div></div>`,
			i*cw+2, cw-4, h-2, bg, html.EscapeString(name), min(32, max(14, h/3)), html.EscapeString(text))
	}
	return b.String()
}

func timeseries(p panel, q *prom, all []series, names []string, w, h int) string {
	def := p.FieldConfig.Defaults
	// Legend below the plot: as many rows as it needs, at most half the panel.
	legendRows := 0
	if len(all) > 0 {
		perRow := max(1, w/170)
		legendRows = min((len(all)+perRow-1)/perRow, max(1, (h/2)/14))
	}
	plotH := h - legendRows*14 - 6
	const left, right, top, bottom = 66, 10, 6, 16
	pw, ph := float64(w-left-right), float64(plotH-top-bottom)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range all {
		for _, v := range s.v {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	lo = math.Min(lo, 0)
	if def.Min != nil {
		lo = *def.Min
	}
	if def.Max != nil {
		hi = math.Max(hi, *def.Max)
	}
	for _, st := range def.Thresholds.Steps {
		if st.Value != nil && *st.Value > hi && *st.Value <= hi*1.5 {
			hi = *st.Value
		}
	}
	if hi <= lo {
		hi = lo + 1
	}
	ticks := niceTicks(lo, hi, max(2, plotH/40))
	if def.Unit == "bytes" || def.Unit == "Bps" || def.Unit == "binBps" {
		// Round numbers of KiB, MiB…, not of bytes.
		scale := 1.0
		for hi/scale >= 1024 {
			scale *= 1024
		}
		ticks = niceTicks(lo/scale, hi/scale, max(2, plotH/40))
		for i := range ticks {
			ticks[i] *= scale
		}
	}
	hi = math.Max(hi, ticks[len(ticks)-1])
	t0, t1 := float64(q.start.Unix()), float64(q.end.Unix())
	X := func(t float64) float64 { return left + (t-t0)/(t1-t0)*pw }
	Y := func(v float64) float64 { return top + ph - (v-lo)/(hi-lo)*ph }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" style="position:absolute;top:24px;left:0">`, w, h)
	for _, v := range ticks {
		fmt.Fprintf(&b, `<line x1="%d" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#2c3235"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
			left, left+pw, Y(v), Y(v), left-4, Y(v)+3, html.EscapeString(format(v, def.Unit)))
	}
	span := q.end.Sub(q.start)
	tstep := 5 * time.Minute
	for _, s := range []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour} {
		if span/s <= time.Duration(max(2, w/90)) {
			tstep = s
			break
		}
	}
	for t := q.start.Truncate(tstep).Add(tstep); !t.After(q.end); t = t.Add(tstep) {
		x := X(float64(t.Unix()))
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%.1f" stroke="#2c3235"/><text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`,
			x, x, top, top+ph, x, top+ph+12, t.UTC().Format("15:04"))
	}
	for _, st := range def.Thresholds.Steps {
		if st.Value != nil && *st.Value >= lo && *st.Value <= hi {
			fmt.Fprintf(&b, `<line x1="%d" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/>`, left, left+pw, Y(*st.Value), Y(*st.Value), color(st.Color))
		}
	}
	gap := 2.5 * q.step.Seconds() // a missing sample breaks the line, as Grafana does
	for i, s := range all {
		c := palette[i%len(palette)]
		var path strings.Builder
		for j := range s.t {
			cmd := "L"
			if j == 0 || s.t[j]-s.t[j-1] > gap {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f %.1f ", cmd, X(s.t[j]), Y(s.v[j]))
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.3"/>`, path.String(), c)
	}
	if len(all) == 0 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" style="font-size:12px">no data</text>`, left+pw/2, top+ph/2)
	}
	perRow := max(1, w/170)
	for i := range all {
		r, c := i/perRow, i%perRow
		if r >= legendRows {
			break
		}
		lx, ly := 8+c*(w-16)/perRow, plotH+r*14+8
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="3" fill="%s"/><text class="lg" x="%d" y="%d">%s</text>`,
			lx, ly-4, palette[i%len(palette)], lx+14, ly, html.EscapeString(clip(names[i], (w-16)/perRow/6)))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func clip(s string, n int) string {
	if n > 3 && len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

// screenshot renders the page with headless Chromium (Debian's chromium).
func screenshot(page, png string, width, height int) error {
	bin := "chromium"
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if _, err := exec.LookPath(b); err == nil {
			bin = b
			break
		}
	}
	abs, err := filepath.Abs(page)
	if err != nil {
		return err
	}
	pngAbs, err := filepath.Abs(png)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--screenshot="+pngAbs, fmt.Sprintf("--window-size=%d,%d", width, height), "file://"+abs)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", bin, err, out)
	}
	return nil
}
