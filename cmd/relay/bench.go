package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/relaydev/relay/loadgen"
	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
)

const benchUsage = `usage: relay bench [flags]

Runs S TCP senders and R WebSocket receivers and reports throughput, latency,
loss and the server's CPU, RSS and write syscalls (see docs/benchmarks.md).
Without --ingest/--fanout it benchmarks a 'relay all' started in this process
(--spawn: in a child process, so the server's figures are its own).

`

// benchTarget is the server under test.
type benchTarget struct {
	ingest, fanout, nats string
	probe                loadgen.Probe
	profile              func(d time.Duration, file string) error
	heapProfile          func(file string) error
	stop                 func()
}

// bench runs `relay bench`: flag parsing and wiring; the load generator is
// package loadgen.
func bench(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench")
	var (
		ingestAddr  = fs.String("ingest", "", "ingest handshake listener (CHANNEL */line) host:port; empty: start relay")
		fanoutAddr  = fs.String("fanout", "", "fanout HTTP host:port; empty: start relay")
		natsURL     = fs.String("nats", "", "the server's NATS URL (for --nats-baseline against a given server)")
		pid         = fs.Int("pid", 0, "with --ingest/--fanout: the server's process id, for CPU, RSS and write syscalls from /proc")
		spawn       = fs.Bool("spawn", false, "run the server as a child 'relay bench --serve' process instead of in this process")
		senders     = fs.Int("senders", 1, "TCP senders (S)")
		receivers   = fs.Int("receivers", 100, "WebSocket receivers (R)")
		channels    = fs.Int("channels", 1, "channels; sender i and receiver j use channel i%C and j%C")
		size        = fs.Int("size", 100, "message size in bytes (at least 16: the send timestamp)")
		rate        = fs.Float64("rate", 0, "total messages per second offered; 0: flat out (closed loop, see --window)")
		window      = fs.Int("window", 256, "flat out: most messages a channel's senders run ahead of its slowest reading receiver")
		duration    = fs.Duration("duration", 10*time.Second, "measurement window")
		warmup      = fs.Duration("warmup", 2*time.Second, "load before the measurement window (not counted)")
		slow        = fs.Float64("slow", 0, "fraction of receivers that connect and never read (e.g. 0.01)")
		ceiling     = fs.Bool("ceiling", false, "measure the raw-TCP ceiling only: the same stream over plain TCP in this process")
		withCeiling = fs.Bool("with-ceiling", false, "measure the raw-TCP ceiling first, then relay, and report relay as a ratio of it")
		floor       = fs.Bool("floor", false, "measure the latency floor only: one message at a time written to R plain TCP receivers in this process from every core")
		natsBase    = fs.Bool("nats-baseline", false, "also measure a bare nats.go publisher into the same NATS, and report ingest as a ratio of it")
		baseHeader  = fs.Bool("baseline-header", false, "with --nats-baseline: the bare publisher also sends Relay-Format: text (as ingest does with RELAY_INGEST_TEXT_HEADER=true)")
		idle        = fs.Bool("idle", false, "memory: open R idle WebSocket connections and report the server's RSS per connection (after GC)")
		burst       = fs.Bool("burst", false, "find the largest unpaced burst (--size-byte lines, one sender, one write) that R receivers reading as fast as they can all survive")
		burstStart  = fs.Int("burst-start", 1000, "with --burst: lines in the first burst; doubled until one fails, then bisected")
		burstMax    = fs.Int("burst-max", 1<<20, "with --burst: the largest burst tried (lines)")
		burstSteps  = fs.Int("burst-steps", 3, "with --burst: bisections after the first failure")
		restart     = fs.Bool("restart", false, "rolling restart: R watchers on one of two 'relay fanout' children (NATS in this process), SIGTERM to it; reports 1001s, 1006s and the other's reconnects/s and peak RSS")
		jsonOut     = fs.Bool("json", false, "print the report as JSON on stdout (progress still goes to stderr)")
		quiet       = fs.Bool("quiet", false, "no progress lines")
		cpuProfile  = fs.String("cpuprofile", "", "write a CPU profile of the server over the measurement window to this file")
		memProfile  = fs.String("memprofile", "", "write a heap profile of the server (after GC) to this file at the end of the measurement, connections still open")
		token       = fs.String("token", "", "token for senders (handshake) and receivers (Authorization: Bearer); needs send and watch on bench.>")
		tokenKey    = fs.String("token-key", "", "with RELAY_AUTH=jwt and no --token: mint one with this key file (PEM private key or HMAC secret; default RELAY_AUTH_HMAC_SECRET_FILE)")
		soakFor     = fs.Duration("soak", 0, "soak for this long (e.g. 10m): a moderate rate while senders and watchers come and go; reports the slopes of the server's RSS and goroutines (a child server unless --ingest/--fanout; --rate, --senders, --receivers, --channels, --size set the load, else 500 msg/s, 8 senders, 40 watchers, 4 channels)")
		lifetime    = fs.Duration("lifetime", 10*time.Second, "with --soak: mean time a sender or watcher stays connected before another replaces it")
		serveMode   = fs.Bool("serve", false, "internal: run 'relay all' on loopback ports for a parent 'relay bench --spawn'")
		serveFor    = fs.Duration("serve-timeout", time.Hour, "internal: --serve exits after this long")
	)
	pos, code, ok := parseFlags(fs, benchUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, "bench", "takes no arguments, got %q", pos[0])
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := loadgen.RaiseFileLimit(); err != nil {
		fmt.Fprintf(stderr, "relay bench: %v\n", err)
	}
	if *serveMode {
		return benchServe(ctx, *serveFor, stdout, stderr)
	}
	if *restart {
		return benchRestart(ctx, *receivers, *channels, *jsonOut, stdout, stderr)
	}
	if *soakFor > 0 {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		sc := loadgen.SoakConfig{Duration: *soakFor, Lifetime: *lifetime}
		if set["rate"] {
			sc.Rate = *rate
		}
		if set["senders"] {
			sc.Senders = *senders
		}
		if set["receivers"] {
			sc.Watchers = *receivers
		}
		if set["channels"] {
			sc.Channels = *channels
		}
		if set["size"] {
			sc.Size = *size
		}
		if !*quiet {
			sc.Progress = stderr
		}
		tok, err := benchToken(*token, *tokenKey, *soakFor)
		if err != nil {
			fmt.Fprintf(stderr, "relay bench: %v\n", err)
			return 2
		}
		sc.SendToken, sc.WatchToken = tok, tok
		return benchSoak(ctx, sc, *ingestAddr, *fanoutAddr, *pid, *jsonOut, stdout, stderr)
	}

	base := loadgen.Config{
		Senders: *senders, Receivers: *receivers, Channels: *channels, Size: *size,
		Rate: *rate, Window: *window, Slow: *slow, Warmup: *warmup, Duration: *duration,
		BurstStart: *burstStart, BurstMax: *burstMax, BurstSteps: *burstSteps,
	}
	if !*quiet {
		base.Progress = stderr
	}
	tok, err := benchToken(*token, *tokenKey, *warmup+*duration)
	if err != nil {
		fmt.Fprintf(stderr, "relay bench: %v\n", err)
		return 2
	}
	base.SendToken, base.WatchToken = tok, tok
	var modes []loadgen.Mode
	switch {
	case *idle:
		modes = []loadgen.Mode{loadgen.ModeIdle}
		base.Warmup = 0
	case *burst:
		modes = []loadgen.Mode{loadgen.ModeBurst}
	case *ceiling:
		modes = []loadgen.Mode{loadgen.ModeCeiling}
	case *floor:
		modes = []loadgen.Mode{loadgen.ModeFloor}
	case *withCeiling:
		modes = []loadgen.Mode{loadgen.ModeCeiling, loadgen.ModeRelay}
	default:
		modes = []loadgen.Mode{loadgen.ModeRelay}
	}
	if *natsBase {
		modes = append(modes, loadgen.ModeNATS)
	}
	for _, m := range modes {
		c := base
		c.Mode = m
		if m == loadgen.ModeRelay || m == loadgen.ModeIdle || m == loadgen.ModeBurst {
			c.IngestAddr, c.FanoutAddr = "x", "x" // checked for real below
		}
		if m == loadgen.ModeNATS {
			c.NATSURL = "x"
		}
		if err := c.Validate(); err != nil {
			fmt.Fprintf(stderr, "relay bench: %v\n", err)
			return 2
		}
	}
	external := *ingestAddr != "" || *fanoutAddr != ""
	if external && *spawn {
		fmt.Fprintln(stderr, "relay bench: --spawn starts its own server; drop --ingest/--fanout")
		return 2
	}

	needServer := false
	for _, m := range modes {
		needServer = needServer || !m.InProcess()
	}
	var target benchTarget
	switch {
	case !needServer:
	case external:
		target = benchTarget{ingest: *ingestAddr, fanout: *fanoutAddr, nats: *natsURL}
		if *pid > 0 {
			target.probe = loadgen.PIDProbe{PID: *pid}
		}
	case *spawn:
		target, err = spawnBenchServer(ctx, stderr)
	default:
		target, err = startBenchServer(ctx, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "relay bench: start server: %v\n", err)
		return 1
	}
	if target.stop != nil {
		defer target.stop()
	}

	report := benchReport{Machine: loadgen.ReadMachine()}
	for _, m := range modes {
		c := base
		c.Mode = m
		c.IngestAddr, c.FanoutAddr, c.NATSURL, c.Probe = target.ingest, target.fanout, target.nats, target.probe
		if m.InProcess() {
			c.Probe = loadgen.SelfProbe{}
		}
		c.NATSHeader = *baseHeader
		if *cpuProfile != "" && m != loadgen.ModeIdle && m != loadgen.ModeBurst {
			file := *cpuProfile
			if len(modes) > 1 {
				file += "." + string(m)
			}
			prof := target.profile
			if m.InProcess() || prof == nil {
				prof = selfProfile
			}
			c.OnMeasure = func(d time.Duration) {
				if err := prof(d, file); err != nil {
					fmt.Fprintf(stderr, "relay bench: cpu profile: %v\n", err)
				}
			}
		}
		if *memProfile != "" && !m.InProcess() {
			prof := target.heapProfile
			if prof == nil {
				prof = selfHeapProfile
			}
			c.AtPeak = func() {
				if err := prof(*memProfile); err != nil {
					fmt.Fprintf(stderr, "relay bench: heap profile: %v\n", err)
				}
			}
		}
		if !*quiet {
			fmt.Fprintf(stderr, "relay bench: %s run\n", m)
		}
		res, err := loadgen.Run(ctx, c)
		if err != nil {
			fmt.Fprintf(stderr, "relay bench: %s: %v\n", m, err)
			return 1
		}
		report.Runs = append(report.Runs, res)
	}
	report.ratios()

	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return 1
		}
		return 0
	}
	for i, res := range report.Runs {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		res.WriteText(stdout)
	}
	if report.RatioToCeiling > 0 {
		fmt.Fprintf(stdout, "\nrelay deliveries/s = %.3f × the raw-TCP ceiling\n", report.RatioToCeiling)
	}
	if report.RatioToNATS > 0 {
		fmt.Fprintf(stdout, "\ningest into NATS = %.3f × a bare nats.go publisher\n", report.RatioToNATS)
	}
	return 0
}

// benchSoak runs `relay bench --soak`: against --ingest/--fanout when
// given, else against a child 'relay bench --serve' so that the RSS and
// goroutines sampled are the server's alone.
func benchSoak(ctx context.Context, sc loadgen.SoakConfig, ingestAddr, fanoutAddr string, pid int, jsonOut bool, stdout, stderr io.Writer) int {
	if ingestAddr != "" || fanoutAddr != "" {
		sc.IngestAddr, sc.FanoutAddr = ingestAddr, fanoutAddr
		sc.Probe = loadgen.PIDProbe{PID: pid}
		if pid <= 0 {
			fmt.Fprintln(stderr, "relay bench: --soak against --ingest/--fanout needs --pid, the server's process id")
			return 2
		}
	} else {
		sc.IngestAddr, sc.FanoutAddr, sc.Probe = "x", "x", loadgen.PIDProbe{} // checked for real below
	}
	if err := sc.Validate(); err != nil {
		fmt.Fprintf(stderr, "relay bench: %v\n", err)
		return 2
	}
	if ingestAddr == "" && fanoutAddr == "" {
		t, err := spawnBenchServer(ctx, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "relay bench: start server: %v\n", err)
			return 1
		}
		defer t.stop()
		sc.IngestAddr, sc.FanoutAddr, sc.Probe = t.ingest, t.fanout, t.probe
	}
	res, err := loadgen.Soak(ctx, sc)
	if err != nil {
		fmt.Fprintf(stderr, "relay bench: soak: %v\n", err)
		return 1
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Machine loadgen.Machine     `json:"machine"`
			Soak    *loadgen.SoakResult `json:"soak"`
		}{loadgen.ReadMachine(), res}); err != nil {
			return 1
		}
	} else {
		res.WriteText(stdout)
	}
	if res.Gaps > 0 {
		fmt.Fprintf(stderr, "relay bench: soak: %d messages missed by watchers that stayed connected\n", res.Gaps)
		return 1
	}
	return 0
}

// benchReport is the --json output.
type benchReport struct {
	Machine        loadgen.Machine   `json:"machine"`
	Runs           []*loadgen.Result `json:"runs"`
	RatioToCeiling float64           `json:"relay_to_ceiling_deliveries,omitempty"`
	RatioToNATS    float64           `json:"ingest_to_bare_nats,omitempty"`
}

func (r *benchReport) ratios() {
	var ceil, relay, bare *loadgen.Result
	for _, res := range r.Runs {
		switch res.Mode {
		case loadgen.ModeCeiling:
			ceil = res
		case loadgen.ModeRelay:
			relay = res
		case loadgen.ModeNATS:
			bare = res
		}
	}
	if ceil != nil && relay != nil && ceil.DeliveriesPerSec > 0 {
		r.RatioToCeiling = relay.DeliveriesPerSec / ceil.DeliveriesPerSec
	}
	if bare != nil && relay != nil && bare.NATSInPerSec > 0 {
		r.RatioToNATS = relay.NATSInPerSec / bare.NATSInPerSec
	}
}

// benchConfig is 'relay all' on free loopback ports, otherwise as the
// environment configures it (RELAY_FANOUT_CLIENT_QUEUE and so on apply).
func benchConfig() (config.Config, error) {
	// Validated after the listeners are replaced: the environment's own
	// (e.g. a fixed listener refused under RELAY_AUTH=jwt) are not used.
	cfg, err := config.Load()
	if err != nil {
		return cfg, err
	}
	cfg.Ingest.Listeners = config.MustParseListeners("127.0.0.1:0=*/line")
	cfg.Ingest.HTTPAddr = "127.0.0.1:0"
	cfg.Fanout.Addr = "127.0.0.1:0"
	cfg.EmbeddedListen = "127.0.0.1:0"
	cfg.ShutdownGrace = 5 * time.Second
	// Every sender and receiver of the load generator comes from one
	// address, 127.0.0.1: per-address limits meant for the internet would
	// refuse most of them (4429, -ERR rate limited). Lifted unless the
	// environment sets them, so a run can still measure the limits.
	unset := func(name string) bool { _, ok := os.LookupEnv(name); return !ok }
	if unset("RELAY_INGEST_MAX_CONNECTIONS_PER_IP") {
		cfg.Ingest.MaxConnectionsPerIP = 0
	}
	if unset("RELAY_INGEST_CONNECT_RATE_PER_IP") {
		cfg.Ingest.ConnectRatePerIP = ""
	}
	if unset("RELAY_FANOUT_MAX_CONNECTIONS_PER_IP") {
		cfg.Fanout.MaxConnectionsPerIP = 0
	}
	if unset("RELAY_FANOUT_CONNECT_RATE_PER_IP") {
		cfg.Fanout.ConnectRatePerIP = ""
	}
	if os.Getenv("RELAY_LOG_LEVEL") == "" {
		cfg.LogLevel = "warn"
	}
	return cfg, cfg.Validate(config.RoleAll)
}

// startBenchServer runs 'relay all' in this process until stop is called.
func startBenchServer(ctx context.Context, stderr io.Writer) (benchTarget, error) {
	cfg, err := benchConfig()
	if err != nil {
		return benchTarget{}, err
	}
	log := newLogger(cfg, stderr)
	sctx, cancel := context.WithCancel(ctx)
	ready := make(chan started, 1)
	done := make(chan error, 1)
	go func() {
		done <- runRoleNotify(sctx, config.RoleAll, cfg, log, func(s started) { ready <- s })
	}()
	select {
	case s := <-ready:
		natsIn := func() uint64 {
			v, err := s.NATS.Varz(nil)
			if err != nil {
				return 0
			}
			return uint64(v.InMsgs)
		}
		return benchTarget{
			ingest:  s.IngestAddr[0].String(),
			fanout:  s.FanoutAddr.String(),
			nats:    s.NATS.ClientURL(),
			probe:   loadgen.SelfProbe{NATSInMsgs: natsIn},
			profile: selfProfile,
			stop:    func() { cancel(); <-done },
		}, nil
	case err := <-done:
		cancel()
		return benchTarget{}, errors.Join(err, errors.New("relay stopped before it was ready"))
	}
}

func selfHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.Lookup("heap").WriteTo(f, 0)
}

func selfProfile(d time.Duration, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	time.Sleep(d)
	pprof.StopCPUProfile()
	return nil
}

// benchAddrs is what a --serve child prints on its first stdout line.
type benchAddrs struct {
	Ingest string `json:"ingest"`
	Fanout string `json:"fanout"`
	NATS   string `json:"nats"`
	Debug  string `json:"debug"`
	PID    int    `json:"pid"`
}

// benchServe is the child side of --spawn: 'relay all' on loopback, plus
// pprof and runtime stats on a loopback debug port. It exits when its
// stdin closes (the parent is gone), on a signal, or after maxLife.
func benchServe(ctx context.Context, maxLife time.Duration, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, maxLife)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	t, err := startBenchServer(ctx, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "relay bench --serve: %v\n", err)
		return 1
	}
	defer t.stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(stderr, "relay bench --serve: %v\n", err)
		return 1
	}
	probe := t.probe.(loadgen.SelfProbe)
	srv := &http.Server{Handler: loadgen.DebugHandler(probe.NATSInMsgs), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	addrs := benchAddrs{Ingest: t.ingest, Fanout: t.fanout, NATS: t.nats, Debug: "http://" + ln.Addr().String(), PID: os.Getpid()}
	if err := json.NewEncoder(stdout).Encode(addrs); err != nil {
		return 1
	}
	<-ctx.Done()
	return 0
}

// spawnBenchServer starts this binary as 'relay bench --serve' and reads
// where it listens.
func spawnBenchServer(ctx context.Context, stderr io.Writer) (benchTarget, error) {
	exe, err := os.Executable()
	if err != nil {
		return benchTarget{}, err
	}
	cmd := exec.Command(exe, "bench", "--serve")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return benchTarget{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return benchTarget{}, err
	}
	if err := cmd.Start(); err != nil {
		return benchTarget{}, err
	}
	stopChild := func() {
		stdin.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		waited := make(chan struct{})
		go func() { cmd.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-waited
		}
	}
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, out)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	var a benchAddrs
	if err := json.Unmarshal([]byte(line), &a); err != nil || a.PID == 0 {
		stopChild()
		return benchTarget{}, fmt.Errorf("child server did not report its addresses (%q)", line)
	}
	probe := loadgen.HTTPProbe{PID: a.PID, URL: a.Debug}
	return benchTarget{
		ingest: a.Ingest, fanout: a.Fanout, nats: a.NATS, probe: probe,
		profile: func(d time.Duration, file string) error {
			return fetchProfile(a.Debug+"/debug/pprof/profile?seconds="+strconv.Itoa(max(1, int(d.Seconds()))), file)
		},
		heapProfile: func(file string) error {
			return fetchProfile(a.Debug+"/debug/pprof/heap?gc=1", file)
		},
		stop: stopChild,
	}, nil
}

func fetchProfile(url, file string) error {
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// benchToken is --token, or with RELAY_AUTH=jwt a token minted for the bench
// channels (send and watch on bench.> and soak.>) that outlives the run.
func benchToken(token, keyFile string, run time.Duration) (string, error) {
	if token != "" {
		return token, nil
	}
	cfg, err := config.Load()
	if err != nil || cfg.AuthMode != string(auth.ModeJWT) {
		return "", nil // the server reports a bad config itself
	}
	file := cmp.Or(keyFile, cfg.HMACSecretFile)
	if file == "" {
		return "", errors.New("RELAY_AUTH=jwt: give --token, or --token-key FILE to mint one")
	}
	key, err := auth.LoadSigningKey(file)
	if err != nil {
		return "", err
	}
	return auth.Mint(key, auth.MintOptions{Subject: "relay-bench", TTL: run + 10*time.Minute,
		Issuer: cfg.Issuer, Audience: cfg.Audience,
		Permissions: auth.Permissions{Send: []string{"bench.>", "soak.>"}, Watch: []string{"bench.>", "soak.>"}}})
}
