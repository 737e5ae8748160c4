package fanout

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/subjects"
)

// Presence: ingest announces each channel's sender count per ingest pod on
// <prefix>.ev.<channel> (at every arrival and departure, and repeated every
// RELAY_PRESENCE_REFRESH). Every fanout reads all of them (one wildcard
// subscription), sums the pods' counts per channel, forgets a pod's count
// when it is not repeated in time (an ingest that died), tells envelope
// clients of control channels {"event":"senders","count":N} when they join
// and when the sum changes, and answers GET /api/channels/{channel} for any
// channel.

// presenceSweep is how often expired pod counts are looked for.
const presenceSweep = time.Second

// rateWindow is the window of the "rate" in /api/channels.
const rateWindow = 5 * time.Second

type presence struct {
	mapper   subjects.Mapper
	log      *slog.Logger
	onChange func(channel string, senders int) // called with mu held

	mu    sync.Mutex
	chans map[string]*podCounts
	sub   *nats.Subscription
	rates map[string]rateSample // by channel, for channels subscribed here
}

// podCounts is one channel's sender counts by ingest pod.
type podCounts struct {
	pods  map[string]podCount
	total int
}

type podCount struct {
	senders int
	expires time.Time
}

type rateSample struct {
	at        time.Time
	delivered uint64
	rate      float64
	valid     bool // rate covers a whole window
}

func newPresence(mapper subjects.Mapper, log *slog.Logger) *presence {
	return &presence{mapper: mapper, log: log, chans: map[string]*podCounts{}, rates: map[string]rateSample{}}
}

// subscribe starts reading every channel's presence events. The round
// trip makes sure the server has the interest when New returns (without
// NATS now, nats.go sends the interest when it connects).
func (p *presence) subscribe(nc *nats.Conn, timeout time.Duration) error {
	sub, err := nc.Subscribe(p.mapper.EventWildcard(), p.handle)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSubscribe, p.mapper.EventWildcard(), err)
	}
	p.sub = sub
	if err := nc.FlushTimeout(timeout); err != nil {
		p.log.Warn("presence subscription not confirmed yet", "err", err)
	}
	// Ask every ingest for its counts now (they answer within about a
	// second) instead of reading 0 senders until the next refresh. Lost,
	// it costs only that wait.
	if err := nc.Publish(p.mapper.PresenceQuery(), nil); err != nil {
		p.log.Debug("presence query not sent; counts come with the next refresh", "err", err)
	}
	return nil
}

// handle is the presence subscription's callback.
func (p *presence) handle(m *nats.Msg) {
	channel, ok := p.mapper.EventChannel(m.Subject)
	if !ok {
		return
	}
	var ev subjects.Presence
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Pod == "" || ev.Senders < 0 {
		p.log.Debug("presence event ignored", "subject", m.Subject, "err", err)
		return
	}
	ttl := time.Duration(ev.TTLMillis) * time.Millisecond
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.chans[channel]
	if pc == nil {
		if ev.Senders == 0 {
			return
		}
		pc = &podCounts{pods: map[string]podCount{}}
		p.chans[channel] = pc
	}
	if ev.Senders == 0 {
		delete(pc.pods, ev.Pod)
	} else {
		pc.pods[ev.Pod] = podCount{senders: ev.Senders, expires: time.Now().Add(ttl)}
	}
	p.recount(channel, pc)
}

// recount sums pc and reports a change; p.mu held.
func (p *presence) recount(channel string, pc *podCounts) {
	total := 0
	for _, c := range pc.pods {
		total += c.senders
	}
	if len(pc.pods) == 0 {
		delete(p.chans, channel)
	}
	if total != pc.total {
		pc.total = total
		if p.onChange != nil {
			p.onChange(channel, total)
		}
	}
}

// senders is channel's sender count over every ingest pod.
func (p *presence) senders(channel string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc := p.chans[channel]; pc != nil {
		return pc.total
	}
	return 0
}

// sweep forgets pod counts that were not repeated in time.
func (p *presence) sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for channel, pc := range p.chans {
		changed := false
		for pod, c := range pc.pods {
			if now.After(c.expires) {
				delete(pc.pods, pod)
				changed = true
			}
		}
		if changed {
			p.recount(channel, pc)
		}
	}
}

// sampleRates updates the message rate of each channel subscribed here.
func (p *presence) sampleRates(now time.Time, delivered map[string]uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for channel := range p.rates {
		if _, ok := delivered[channel]; !ok {
			delete(p.rates, channel)
		}
	}
	for channel, d := range delivered {
		s, ok := p.rates[channel]
		switch {
		case !ok || d < s.delivered:
			p.rates[channel] = rateSample{at: now, delivered: d}
		case now.Sub(s.at) >= rateWindow:
			p.rates[channel] = rateSample{at: now, delivered: d, valid: true,
				rate: float64(d-s.delivered) / now.Sub(s.at).Seconds()}
		}
	}
}

// rate is channel's messages per second over the last whole window, and
// false when this fanout does not read the channel (no local watcher) or
// has not watched it for a whole window yet.
func (p *presence) rate(channel string) (float64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.rates[channel]
	return s.rate, ok && s.valid
}

// run sweeps and samples until stop closes.
func (p *presence) run(stop <-chan struct{}, delivered func() map[string]uint64) {
	t := time.NewTicker(presenceSweep)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			p.sweep(now)
			p.sampleRates(now, delivered())
		}
	}
}

// notifySenders queues the senders event for every envelope client of
// channel on this pod; presence.mu held (so events leave in order).
func (s *Server) notifySenders(channel string, n int) {
	if !s.ctl.enabled(channel) {
		return
	}
	s.hub.mu.Lock()
	ch := s.hub.channels[channel]
	s.hub.mu.Unlock()
	if ch == nil {
		return
	}
	var ev *message
	ch.mu.RLock()
	for _, c := range ch.clients {
		if c.envelope {
			if ev == nil {
				ev = sendersEvent(n)
			}
			c.sendEvent(ev)
		}
	}
	ch.mu.RUnlock()
}

// greetSenders queues the channel's sender count for a client that has just
// joined, under presence.mu so that no later change can overtake it.
func (s *Server) greetSenders(c *client, channel string) {
	if !c.envelope || subjects.IsPattern(channel) || !s.ctl.enabled(channel) {
		// Counts are told on control channels, where a client talks to
		// the senders; a pattern's clients are told none (one count per
		// channel would be a flood). /api/channels answers for any channel.
		return
	}
	s.presence.mu.Lock()
	defer s.presence.mu.Unlock()
	n := 0
	if pc := s.presence.chans[channel]; pc != nil {
		n = pc.total
	}
	c.sendEvent(sendersEvent(n))
}

// channelInfo is the answer of GET /api/channels/{channel}.
type channelInfo struct {
	Channel string `json:"channel"`
	// Senders: TCP senders of the channel over every ingest pod (presence).
	Senders int `json:"senders"`
	// Watchers: WebSocket clients of the channel on this fanout.
	Watchers int `json:"watchers"`
	// Rate: messages per second this fanout received for the channel over
	// the last 5 s; null when it has no watcher here to measure it by.
	Rate *float64 `json:"rate"`
	// Control: clients may talk back on the channel (RELAY_CONTROL_CHANNELS).
	Control bool `json:"control"`
}

// serveChannelInfo answers GET /api/channels/{channel}; with auth on the
// request needs the watch permission (token as for /ws/).
func (s *Server) serveChannelInfo(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	w.Header().Set("Cache-Control", "no-store")
	if err := subjects.ValidateChannel(name); err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := s.authorize(r, name); err != nil {
		var ref *auth.Refusal
		if !errors.As(err, &ref) {
			ref = auth.ErrInvalid
		}
		status := http.StatusUnauthorized
		if !ref.Unauthorized() {
			status = http.StatusForbidden
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="relay"`)
		}
		writeJSONError(w, status, ref.Text)
		return
	}
	info := channelInfo{Channel: name, Senders: s.presence.senders(name), Control: s.ctl.enabled(name)}
	s.hub.mu.Lock()
	ch := s.hub.channels[name]
	s.hub.mu.Unlock()
	if ch != nil {
		ch.mu.RLock()
		info.Watchers = len(ch.clients)
		ch.mu.RUnlock()
	}
	if rate, ok := s.presence.rate(name); ok {
		rate = float64(int64(rate*100+0.5)) / 100
		info.Rate = &rate
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(info)
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// deliveredByChannel reads how many messages each channel's subscription
// here has delivered (for the rate).
func (h *hub) deliveredByChannel() map[string]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]uint64, len(h.channels))
	for name, ch := range h.channels {
		select {
		case <-ch.ready: // ch.sub is set
		default:
			continue
		}
		if ch.sub == nil {
			continue
		}
		if n, err := ch.sub.Delivered(); err == nil {
			out[name] = uint64(n)
		}
	}
	return out
}
