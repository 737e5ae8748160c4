// Command benchplot runs relay bench over one dimension at a time (receivers,
// message size, channels, senders) and draws how throughput and latency
// change, as a PNG for docs/benchmarks.md. It has its own module so that the
// font it draws with is no dependency of relay.
//
//	go build -o relay ./cmd/relay
//	cd tools/benchplot && go run . -relay ../../relay -data ../../docs/benchmarks-sweep.jsonl -out ../../docs/benchmarks.png
//
// Without -relay it only redraws the PNG from -data.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// point is one bench run of a sweep, as stored in -data (JSON lines).
type point struct {
	Dim    string  `json:"dim"`
	X      float64 `json:"x"`
	Result result  `json:"result"`
	Load1  float64 `json:"load1"`
}

// result is the part of relay bench's JSON report the plot uses.
type result struct {
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	DeliveredMsgs    float64 `json:"delivered_msgs_per_sec"`
	Latency          struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
	LossFraction float64 `json:"loss"`
	Server       *struct {
		CPUCores          float64 `json:"cpu_cores"`
		WritesPerDelivery float64 `json:"write_syscalls_per_delivery"`
	} `json:"server"`
}

// sweep is one dimension: the flag it varies and the values, the rest fixed.
type sweep struct {
	dim    string
	flag   string
	values []float64
	fixed  []string
}

var sweeps = []sweep{
	{"receivers", "--receivers", []float64{1, 10, 100, 1000, 3000}, []string{"--senders", "1", "--channels", "1", "--size", "100"}},
	{"size", "--size", []float64{32, 100, 1000, 8000}, []string{"--senders", "1", "--receivers", "100", "--channels", "1"}},
	{"channels", "--channels", []float64{1, 10, 100}, []string{"--receivers", "1000", "--size", "100"}}, // senders = channels
	{"senders", "--senders", []float64{1, 4, 16, 64}, []string{"--receivers", "100", "--channels", "1", "--size", "100"}},
}

func main() {
	relay := flag.String("relay", "", "relay binary: run the sweeps (else only redraw from -data)")
	data := flag.String("data", "benchmarks-sweep.jsonl", "sweep results, one JSON object per line")
	out := flag.String("out", "benchmarks.png", "PNG to write")
	duration := flag.Duration("duration", 4*time.Second, "measurement window of each run")
	maxLoad := flag.Float64("maxload", 0, "before each run, wait (up to 5 min) until the 1-minute load average is below this; 0: do not wait")
	flag.Parse()
	if *relay != "" {
		if err := runSweeps(*relay, *data, *duration, *maxLoad); err != nil {
			fmt.Fprintln(os.Stderr, "benchplot:", err)
			os.Exit(1)
		}
	}
	points, err := load(*data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
	if err := plot(points, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "benchplot: wrote %s from %d runs\n", *out, len(points))
}

// waitLoad waits until the 1-minute load average is below max, for at most
// five minutes: a run on a busy machine measures the other jobs too.
func waitLoad(max float64) {
	if max <= 0 {
		return
	}
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Second) {
		b, err := os.ReadFile("/proc/loadavg")
		if err != nil {
			return
		}
		var l float64
		if _, err := fmt.Sscanf(string(b), "%f", &l); err != nil || l < max {
			return
		}
	}
}

func runSweeps(relay, data string, d time.Duration, maxLoad float64) error {
	f, err := os.Create(data)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, s := range sweeps {
		for _, v := range s.values {
			args := []string{"bench", "--spawn", "--json", "--quiet", "--warmup", "1s", "--duration", d.String(),
				s.flag, strconv.FormatFloat(v, 'f', -1, 64)}
			args = append(args, s.fixed...)
			if s.dim == "channels" {
				args = append(args, "--senders", strconv.FormatFloat(v, 'f', -1, 64))
			}
			waitLoad(maxLoad)
			fmt.Fprintf(os.Stderr, "benchplot: relay %v\n", args)
			var stderr bytes.Buffer
			cmd := exec.Command(relay, args...)
			cmd.Stderr = &stderr
			outb, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("relay %v: %v: %s", args, err, stderr.String())
			}
			var rep struct {
				Machine struct {
					Load1 float64 `json:"load1"`
				} `json:"machine"`
				Runs []result `json:"runs"`
			}
			if err := json.Unmarshal(outb, &rep); err != nil || len(rep.Runs) == 0 {
				return fmt.Errorf("relay %v: bad report: %v", args, err)
			}
			line, _ := json.Marshal(point{Dim: s.dim, X: v, Result: rep.Runs[0], Load1: rep.Machine.Load1})
			if _, err := fmt.Fprintf(f, "%s\n", line); err != nil {
				return err
			}
		}
	}
	return f.Close()
}

func load(path string) ([]point, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ps []point
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var p point
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return ps, nil
}

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{30, 30, 30, 255}
	grey  = color.RGBA{215, 215, 215, 255}
	blue  = color.RGBA{31, 119, 180, 255}
	red   = color.RGBA{214, 39, 40, 255}
)

// plot draws a 2x2 grid: one panel per dimension, deliveries/s (blue, left
// axis, log scale) and p99 latency in ms (red, right axis, log scale)
// against the dimension (log scale).
func plot(points []point, out string) error {
	const w, h = 1200, 860
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	text(img, 20, 24, black, "relay bench --spawn, flat out (window 256): deliveries/s (blue, left) and p99 latency ms (red, right)")
	for i, s := range sweeps {
		var ps []point
		for _, p := range points {
			if p.Dim == s.dim {
				ps = append(ps, p)
			}
		}
		x0, y0 := 20+(i%2)*(w/2), 50+(i/2)*((h-50)/2)
		panel(img, image.Rect(x0, y0, x0+w/2-30, y0+(h-50)/2-20), s, ps)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func panel(img *image.RGBA, r image.Rectangle, s sweep, ps []point) {
	plotArea := image.Rect(r.Min.X+70, r.Min.Y+30, r.Max.X-60, r.Max.Y-40)
	title := s.dim
	for i := 0; i+1 < len(s.fixed); i += 2 {
		title += fmt.Sprintf("  %s=%s", s.fixed[i][2:], s.fixed[i+1])
	}
	if s.dim == "channels" {
		title += "  senders=channels"
	}
	text(img, r.Min.X+70, r.Min.Y+18, black, title)
	rect(img, plotArea, black)
	if len(ps) == 0 {
		text(img, plotArea.Min.X+10, plotArea.Min.Y+20, black, "no data")
		return
	}
	xs := func(p point) float64 { return p.X }
	dl := func(p point) float64 { return p.Result.DeliveriesPerSec }
	lat := func(p point) float64 { return p.Result.Latency.P99 }
	xlo, xhi := logRange(ps, xs)
	dlo, dhi := logRange(ps, dl)
	llo, lhi := logRange(ps, lat)
	px := func(v float64) int {
		return plotArea.Min.X + int(float64(plotArea.Dx())*(math.Log10(v)-xlo)/(xhi-xlo))
	}
	py := func(v, lo, hi float64) int {
		return plotArea.Max.Y - int(float64(plotArea.Dy())*(math.Log10(math.Max(v, 1e-9))-lo)/(hi-lo))
	}
	// Grid and labels at powers of ten.
	for e := math.Ceil(dlo); e <= dhi; e++ {
		y := py(math.Pow(10, e), dlo, dhi)
		hline(img, plotArea.Min.X, plotArea.Max.X, y, grey)
		text(img, r.Min.X+2, y+4, blue, si(math.Pow(10, e)))
	}
	for e := math.Ceil(llo); e <= lhi; e++ {
		y := py(math.Pow(10, e), llo, lhi)
		text(img, plotArea.Max.X+6, y+4, red, strconv.FormatFloat(math.Pow(10, e), 'g', -1, 64))
	}
	for _, p := range ps {
		x := px(p.X)
		vline(img, x, plotArea.Min.Y, plotArea.Max.Y, grey)
		text(img, x-10, plotArea.Max.Y+16, black, strconv.FormatFloat(p.X, 'f', -1, 64))
	}
	text(img, plotArea.Min.X+plotArea.Dx()/2-20, plotArea.Max.Y+32, black, s.dim)
	series(img, ps, func(p point) (int, int) { return px(p.X), py(dl(p), dlo, dhi) }, blue)
	series(img, ps, func(p point) (int, int) { return px(p.X), py(lat(p), llo, lhi) }, red)
	for _, p := range ps {
		text(img, px(p.X)+5, py(dl(p), dlo, dhi)-6, blue, si(dl(p)))
	}
}

// logRange returns log10 bounds around f over ps, padded to whole decades.
func logRange(ps []point, f func(point) float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, p := range ps {
		v := math.Log10(math.Max(f(p), 1e-9))
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	lo, hi = math.Floor(lo), math.Ceil(hi)
	if hi-lo < 1 {
		hi = lo + 1
	}
	return lo, hi
}

func series(img *image.RGBA, ps []point, at func(point) (int, int), c color.Color) {
	for i := range ps {
		x, y := at(ps[i])
		dot(img, x, y, c)
		if i > 0 {
			px, py := at(ps[i-1])
			line(img, px, py, x, y, c)
		}
	}
}

func si(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 3, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', 3, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func text(img *image.RGBA, x, y int, c color.Color, s string) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func rect(img *image.RGBA, r image.Rectangle, c color.Color) {
	hline(img, r.Min.X, r.Max.X, r.Min.Y, c)
	hline(img, r.Min.X, r.Max.X, r.Max.Y, c)
	vline(img, r.Min.X, r.Min.Y, r.Max.Y, c)
	vline(img, r.Max.X, r.Min.Y, r.Max.Y, c)
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func dot(img *image.RGBA, x, y int, c color.Color) {
	for dx := -3; dx <= 3; dx++ {
		for dy := -3; dy <= 3; dy++ {
			if dx*dx+dy*dy <= 9 {
				img.Set(x+dx, y+dy, c)
			}
		}
	}
}

// line draws a 2-pixel-wide segment (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		img.Set(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}
