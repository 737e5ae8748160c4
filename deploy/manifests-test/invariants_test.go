package manifeststest

import (
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// drainMargin is how much longer than preStop + drain Kubernetes must wait
// before SIGKILL: time for relay to exit after its own deadline.
const drainMargin = 5 * time.Second

// workload is a Deployment or StatefulSet, seen through what the checks need.
type workload struct {
	kind, name string
	replicas   *int32
	selector   *metav1.LabelSelector
	pod        *corev1.PodTemplateSpec
	sts        *appsv1.StatefulSet
}

func (w workload) String() string { return w.kind + "/" + w.name }

func (o *objects) workloads() []workload {
	var ws []workload
	for _, name := range sortedKeys(o.deployments) {
		d := o.deployments[name]
		ws = append(ws, workload{kind: "Deployment", name: name, replicas: d.Spec.Replicas, selector: d.Spec.Selector, pod: &d.Spec.Template})
	}
	for _, name := range sortedKeys(o.statefulsets) {
		s := o.statefulsets[name]
		ws = append(ws, workload{kind: "StatefulSet", name: name, replicas: s.Spec.Replicas, selector: s.Spec.Selector, pod: &s.Spec.Template, sts: s})
	}
	return ws
}

// checker collects every violation instead of stopping at the first.
type checker struct {
	source string
	vars   map[string]configVar
	errs   []string
}

func (c *checker) errorf(what fmt.Stringer, format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf("%s: %s: %s", c.source, what, fmt.Sprintf(format, args...)))
}

type str string

func (s str) String() string { return string(s) }

// checkInvariants returns every way o breaks the rules relay's deployment
// relies on.
func checkInvariants(o *objects, vars map[string]configVar) []string {
	c := &checker{source: o.source, vars: vars}
	ws := o.workloads()
	if len(ws) == 0 {
		c.errorf(str("(all)"), "no Deployment or StatefulSet")
	}
	for _, n := range o.all {
		for _, l := range []string{"app.kubernetes.io/name", "app.kubernetes.io/part-of"} {
			if n.Meta.Labels[l] == "" {
				c.errorf(n, "label %s missing", l)
			}
		}
	}
	for _, w := range ws {
		c.checkWorkload(o, w)
	}
	c.checkServices(o, ws)
	c.checkHPAs(o)
	c.checkPDBs(o, ws)
	return c.errs
}

func (c *checker) checkWorkload(o *objects, w workload) {
	pod := w.pod
	spec := &pod.Spec

	// Selector must select the pod template, or the controller is rejected.
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
		c.errorf(w, "selector %v does not select its pod template labels %v", w.selector, pod.Labels)
	}

	// Kubernetes injects FOO_SERVICE_HOST/FOO_PORT_... for every Service;
	// a Service named relay-* would collide with relay's RELAY_* config.
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		c.errorf(w, "enableServiceLinks must be false")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		c.errorf(w, "automountServiceAccountToken must be false (no API access needed)")
	}
	if sa := spec.ServiceAccountName; sa != "" && sa != "default" {
		if _, ok := o.accounts[sa]; !ok {
			c.errorf(w, "serviceAccountName %q is not among the objects", sa)
		}
	}

	// Non-root, read-only root filesystem, no privilege escalation.
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		c.errorf(w, "pod securityContext.runAsNonRoot must be true")
	}
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		c.errorf(w, "pod securityContext.runAsUser must be set and non-zero")
	}
	if len(spec.Containers) == 0 {
		c.errorf(w, "no containers")
	}
	for i := range spec.Containers {
		c.checkContainer(w, &spec.Containers[i])
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			if _, ok := o.configmaps[v.ConfigMap.Name]; !ok {
				c.errorf(w, "volume %s: ConfigMap %q is not among the objects", v.Name, v.ConfigMap.Name)
			}
		}
	}

	if w.kind == "Deployment" {
		hpa := o.hpaFor("Deployment", w.name)
		switch {
		case hpa && w.replicas != nil:
			c.errorf(w, "has spec.replicas while an HPA scales it (every apply would reset the count)")
		case !hpa && w.replicas == nil:
			c.errorf(w, "neither spec.replicas nor an HPA")
		}
	}

	for i := range spec.Containers {
		ct := &spec.Containers[i]
		switch role := relayRole(ct); role {
		case "ingest", "fanout":
			c.checkRelay(w, ct, role)
		default:
			if strings.Contains(ct.Image, "nats") {
				c.checkNATS(o, w, ct)
			}
		}
	}
}

func (c *checker) checkContainer(w workload, ct *corev1.Container) {
	what := str(fmt.Sprintf("%s container %s", w, ct.Name))
	if ct.Image == "" || strings.HasSuffix(ct.Image, ":latest") || (!strings.Contains(ct.Image, ":") && !strings.Contains(ct.Image, "@")) {
		c.errorf(what, "image %q must name a tag or digest, not latest", ct.Image)
	}
	sc := ct.SecurityContext
	if sc == nil {
		c.errorf(what, "no securityContext")
	} else {
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			c.errorf(what, "readOnlyRootFilesystem must be true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			c.errorf(what, "allowPrivilegeEscalation must be false")
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			c.errorf(what, "runs as root")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			c.errorf(what, "capabilities must drop ALL")
		}
	}
	req, lim := ct.Resources.Requests, ct.Resources.Limits
	if _, ok := req[corev1.ResourceCPU]; !ok {
		c.errorf(what, "no cpu request (the HPA and the scheduler need one)")
	}
	if _, ok := req[corev1.ResourceMemory]; !ok {
		c.errorf(what, "no memory request")
	}
	if _, ok := lim[corev1.ResourceMemory]; !ok {
		c.errorf(what, "no memory limit")
	}
	for name, p := range map[string]*corev1.Probe{"liveness": ct.LivenessProbe, "readiness": ct.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			c.errorf(what, "%s probe missing (an HTTP GET is expected)", name)
			continue
		}
		if _, ok := containerPort(ct, p.HTTPGet.Port); !ok {
			c.errorf(what, "%s probe port %s is not a container port", name, p.HTTPGet.Port.String())
		}
	}
	seen := map[string]bool{}
	for _, e := range ct.Env {
		if seen[e.Name] {
			c.errorf(what, "env %s set twice", e.Name)
		}
		seen[e.Name] = true
	}
}

// relayRole is the subcommand a relay container runs, or "".
func relayRole(ct *corev1.Container) string {
	if !strings.Contains(ct.Image, "relay") || len(ct.Args) == 0 {
		return ""
	}
	return ct.Args[0]
}

func envMap(ct *corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range ct.Env {
		m[e.Name] = e.Value
	}
	return m
}

func (c *checker) checkRelay(w workload, ct *corev1.Container, role string) {
	what := str(fmt.Sprintf("%s container %s (relay %s)", w, ct.Name, role))
	env := envMap(ct)

	// Every RELAY_* variable must be one relay reads, in this role.
	for name := range env {
		if !strings.HasPrefix(name, "RELAY_") {
			continue
		}
		v, ok := c.vars[name]
		if !ok {
			c.errorf(what, "env %s is not a relay variable (see %s)", name, configSrc)
			continue
		}
		if !slices.Contains(roleGroups[role], v.Group) {
			c.errorf(what, "env %s belongs to %s, which relay %s does not read", name, v.Group, role)
		}
	}
	if env["RELAY_NATS_URL"] == "" {
		c.errorf(what, "RELAY_NATS_URL must be set (relay's default is localhost)")
	}

	// Probes: liveness /healthz, readiness /readyz, on the port relay
	// actually serves HTTP on.
	httpVar := map[string]string{"ingest": "RELAY_INGEST_HTTP_ADDR", "fanout": "RELAY_FANOUT_ADDR"}[role]
	addr, err := effective(c.vars, env, httpVar)
	if err != nil {
		c.errorf(what, "%v", err)
		return
	}
	httpPort, err := portOf(addr)
	if err != nil {
		c.errorf(what, "%s=%q: %v", httpVar, addr, err)
	}
	// With RELAY_ADMIN_ADDR, health moves there (and off the public port).
	if admin, _ := effective(c.vars, env, "RELAY_ADMIN_ADDR"); admin != "" {
		httpVar = "RELAY_ADMIN_ADDR"
		if httpPort, err = portOf(admin); err != nil {
			c.errorf(what, "RELAY_ADMIN_ADDR=%q: %v", admin, err)
		}
		if !hasContainerPort(ct, httpPort) {
			c.errorf(what, "admin port %d (RELAY_ADMIN_ADDR) is not a container port", httpPort)
		}
	}
	probes := map[string]*corev1.Probe{"startup": ct.StartupProbe, "liveness": ct.LivenessProbe, "readiness": ct.ReadinessProbe}
	wantPath := map[string]string{"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}
	for name, p := range probes {
		if p == nil || p.HTTPGet == nil {
			if name != "startup" {
				c.errorf(what, "%s probe missing", name)
			}
			continue
		}
		if p.HTTPGet.Path != wantPath[name] {
			c.errorf(what, "%s probe path %q, want %q", name, p.HTTPGet.Path, wantPath[name])
		}
		if port, ok := containerPort(ct, p.HTTPGet.Port); !ok || port != httpPort {
			c.errorf(what, "%s probe port %s is not %s's port %d", name, p.HTTPGet.Port.String(), httpVar, httpPort)
		}
	}
	if role == "ingest" {
		ls, _ := effective(c.vars, env, "RELAY_INGEST_LISTENERS")
		ports, err := listenerPorts(ls)
		if err != nil {
			c.errorf(what, "RELAY_INGEST_LISTENERS=%q: %v", ls, err)
		}
		for _, p := range ports {
			if !hasContainerPort(ct, p) {
				c.errorf(what, "listener port %d (RELAY_INGEST_LISTENERS) is not a container port", p)
			}
		}
	}

	// Drain: SIGTERM comes after preStop; Kubernetes waits
	// terminationGracePeriodSeconds in all before SIGKILL, so it must cover
	// preStop + RELAY_SHUTDOWN_GRACE + a margin.
	gs, _ := effective(c.vars, env, "RELAY_SHUTDOWN_GRACE")
	grace, err := time.ParseDuration(gs)
	if err != nil {
		c.errorf(what, "RELAY_SHUTDOWN_GRACE=%q: %v", gs, err)
	}
	var preStop time.Duration
	if ct.Lifecycle == nil || ct.Lifecycle.PreStop == nil || ct.Lifecycle.PreStop.Sleep == nil {
		c.errorf(what, "preStop sleep missing (load balancers need time to stop sending new connections)")
	} else {
		preStop = time.Duration(ct.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		if preStop <= 0 {
			c.errorf(what, "preStop sleep must be positive")
		}
	}
	tgps := terminationGrace(w.pod)
	if need := preStop + grace + drainMargin; tgps < need {
		c.errorf(what, "terminationGracePeriodSeconds %s < preStop %s + RELAY_SHUTDOWN_GRACE %s + margin %s", tgps, preStop, grace, drainMargin)
	}
}

func terminationGrace(pod *corev1.PodTemplateSpec) time.Duration {
	if pod.Spec.TerminationGracePeriodSeconds == nil {
		return 30 * time.Second // Kubernetes' default
	}
	return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
}

var (
	routeRe    = regexp.MustCompile(`nats-route://([^\s:]+):6222`)
	confDurRe  = regexp.MustCompile(`(?m)^\s*(lame_duck_duration|lame_duck_grace_period)\s*:\s*"?([0-9a-z.]+)"?`)
	payloadRe  = regexp.MustCompile(`(?m)^\s*max_payload\s*:\s*"?([0-9]+)\s*([KMGkmg][Bb]?)?"?`)
	jetstreamR = regexp.MustCompile(`(?m)^\s*jetstream\s*\{`)
)

func (c *checker) checkNATS(o *objects, w workload, ct *corev1.Container) {
	what := str(fmt.Sprintf("%s container %s (NATS)", w, ct.Name))
	if w.sts == nil {
		c.errorf(what, "NATS should run as a StatefulSet (stable names for cluster routes)")
		return
	}
	replicas := int32(1)
	if w.replicas != nil {
		replicas = *w.replicas
	}
	if replicas < 3 || replicas%2 == 0 {
		c.errorf(what, "replicas %d: a NATS cluster needs an odd number, at least 3", replicas)
	}
	hs, ok := o.services[w.sts.Spec.ServiceName]
	if !ok || hs.Spec.ClusterIP != corev1.ClusterIPNone {
		c.errorf(what, "serviceName %q must be a headless Service among the objects", w.sts.Spec.ServiceName)
	}

	var conf string
	for _, v := range w.pod.Spec.Volumes {
		if v.ConfigMap != nil {
			if cm, ok := o.configmaps[v.ConfigMap.Name]; ok {
				for _, s := range cm.Data {
					conf += s
				}
			}
		}
	}
	if conf == "" {
		c.errorf(what, "no NATS config found in a mounted ConfigMap")
		return
	}
	// One route per replica, by its stable DNS name.
	var routes []string
	for _, m := range routeRe.FindAllStringSubmatch(conf, -1) {
		routes = append(routes, m[1])
	}
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("%s-%d.%s", w.name, i, w.sts.Spec.ServiceName))
	}
	if !slices.Equal(routes, want) {
		c.errorf(what, "cluster routes %v, want %v", routes, want)
	}
	// Lame duck on preStop, and time for it before SIGKILL.
	if ct.Lifecycle == nil || ct.Lifecycle.PreStop == nil || ct.Lifecycle.PreStop.Exec == nil ||
		!strings.Contains(strings.Join(ct.Lifecycle.PreStop.Exec.Command, " "), "ldm") {
		c.errorf(what, "preStop must put the server in lame duck mode (--signal ldm)")
	}
	var ldm time.Duration
	for _, m := range confDurRe.FindAllStringSubmatch(conf, -1) {
		d, err := time.ParseDuration(m[2])
		if err != nil {
			c.errorf(what, "%s %q: %v", m[1], m[2], err)
		}
		ldm += d
	}
	if ldm == 0 {
		c.errorf(what, "lame_duck_duration/lame_duck_grace_period not set in the config")
	}
	if tgps := terminationGrace(w.pod); tgps < ldm+drainMargin {
		c.errorf(what, "terminationGracePeriodSeconds %s < lame duck %s + margin %s", tgps, ldm, drainMargin)
	}
	// max_payload must fit relay's largest message.
	if m := payloadRe.FindStringSubmatch(conf); m != nil {
		n, _ := strconv.ParseFloat(m[1], 64)
		switch strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(m[2], "B"), "b")) {
		case "K":
			n *= 1000
		case "M":
			n *= 1000 * 1000
		case "G":
			n *= 1000 * 1000 * 1000
		}
		for _, d := range o.deployments {
			for i := range d.Spec.Template.Spec.Containers {
				rc := &d.Spec.Template.Spec.Containers[i]
				if relayRole(rc) != "ingest" {
					continue
				}
				mm, _ := effective(c.vars, envMap(rc), "RELAY_INGEST_MAX_MESSAGE")
				if v, err := strconv.ParseFloat(mm, 64); err != nil || v > n {
					c.errorf(what, "max_payload %.0f is below RELAY_INGEST_MAX_MESSAGE %s of %s", n, mm, d.Name)
				}
			}
		}
	}
	// JetStream's store on a volume claim.
	if jetstreamR.MatchString(conf) {
		if len(w.sts.Spec.VolumeClaimTemplates) == 0 {
			c.errorf(what, "JetStream enabled but no volumeClaimTemplates")
		}
		mounted := false
		for _, m := range ct.VolumeMounts {
			mounted = mounted || m.MountPath == "/data"
		}
		if !mounted {
			c.errorf(what, "JetStream store_dir /data is not mounted")
		}
	}
}

func (c *checker) checkServices(o *objects, ws []workload) {
	for _, name := range sortedKeys(o.services) {
		s := o.services[name]
		what := str("Service/" + name)
		if len(s.Spec.Selector) == 0 {
			c.errorf(what, "no selector")
			continue
		}
		var matched []workload
		for _, w := range ws {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) != 1 {
			c.errorf(what, "selector %v matches %d workloads, want 1", s.Spec.Selector, len(matched))
			continue
		}
		w := matched[0]
		if s.Labels[metricsServiceLabel] == "true" {
			c.checkMetricsService(what, s, w)
			continue
		}
		for _, p := range s.Spec.Ports {
			found := false
			for i := range w.pod.Spec.Containers {
				if _, ok := containerPort(&w.pod.Spec.Containers[i], p.TargetPort); ok {
					found = true
				}
			}
			if !found {
				c.errorf(what, "port %s targets %s, which %s does not expose", p.Name, p.TargetPort.String(), w)
			}
		}
		// The two relay tiers are reached from outside the cluster.
		for i := range w.pod.Spec.Containers {
			ct := &w.pod.Spec.Containers[i]
			role := relayRole(ct)
			if role == "" {
				continue
			}
			if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
				c.errorf(what, "relay %s Service has type %q, want LoadBalancer", role, s.Spec.Type)
			}
			// Metrics, health and pprof stay inside: no Service exposes the admin port.
			if admin, _ := effective(c.vars, envMap(ct), "RELAY_ADMIN_ADDR"); admin != "" {
				if ap, err := portOf(admin); err == nil {
					for _, sp := range s.Spec.Ports {
						if cp, found := containerPort(ct, sp.TargetPort); found && cp == ap {
							c.errorf(what, "port %s exposes the admin port %d (RELAY_ADMIN_ADDR)", sp.Name, ap)
						}
					}
				}
			}
			if role == "ingest" {
				ls, _ := effective(c.vars, envMap(ct), "RELAY_INGEST_LISTENERS")
				ports, _ := listenerPorts(ls)
				for _, lp := range ports {
					ok := false
					for _, sp := range s.Spec.Ports {
						if cp, found := containerPort(ct, sp.TargetPort); found && cp == lp {
							ok = true
						}
					}
					if !ok {
						c.errorf(what, "listener port %d is not exposed", lp)
					}
				}
			}
		}
	}
}

func (o *objects) hpaFor(kind, name string) bool {
	for _, h := range o.hpas {
		if h.Spec.ScaleTargetRef.Kind == kind && h.Spec.ScaleTargetRef.Name == name {
			return true
		}
	}
	return false
}

func (c *checker) checkHPAs(o *objects) {
	for _, name := range sortedKeys(o.hpas) {
		h := o.hpas[name]
		what := str("HorizontalPodAutoscaler/" + name)
		ref := h.Spec.ScaleTargetRef
		d, ok := o.deployments[ref.Name]
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || !ok {
			c.errorf(what, "scaleTargetRef %s %s/%s is not a Deployment among the objects", ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		minR := int32(1)
		if h.Spec.MinReplicas != nil {
			minR = *h.Spec.MinReplicas
		}
		if minR < 1 || h.Spec.MaxReplicas < minR {
			c.errorf(what, "replicas %d..%d", minR, h.Spec.MaxReplicas)
		}
		if len(h.Spec.Metrics) == 0 {
			c.errorf(what, "no metrics")
		}
		for _, m := range h.Spec.Metrics {
			if m.Resource == nil {
				continue
			}
			for _, ct := range d.Spec.Template.Spec.Containers {
				if _, ok := ct.Resources.Requests[m.Resource.Name]; !ok {
					c.errorf(what, "scales on %s utilization but container %s has no %s request", m.Resource.Name, ct.Name, m.Resource.Name)
				}
			}
		}
	}
}

func (c *checker) checkPDBs(o *objects, ws []workload) {
	covered := map[string]int{}
	for _, name := range sortedKeys(o.pdbs) {
		p := o.pdbs[name]
		what := str("PodDisruptionBudget/" + name)
		if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
			c.errorf(what, "neither maxUnavailable nor minAvailable")
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || sel.Empty() {
			c.errorf(what, "bad or empty selector")
			continue
		}
		n := 0
		for _, w := range ws {
			if sel.Matches(labels.Set(w.pod.Labels)) {
				covered[w.String()]++
				n++
			}
		}
		if n != 1 {
			c.errorf(what, "selects %d workloads, want 1", n)
		}
	}
	for _, w := range ws {
		if covered[w.String()] != 1 {
			c.errorf(w, "covered by %d PodDisruptionBudgets, want 1", covered[w.String()])
		}
	}
}

// containerPort resolves a probe or Service target port against ct's ports.
func containerPort(ct *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range ct.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func hasContainerPort(ct *corev1.Container, port int32) bool {
	_, ok := containerPort(ct, intstr.FromInt32(port))
	return ok
}

// portOf is the port of a listen address such as ":8080".
func portOf(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > math.MaxUint16 {
		return 0, fmt.Errorf("bad port %q", p)
	}
	return int32(n), nil
}

// listenerPorts parses RELAY_INGEST_LISTENERS ("ADDR=CHANNEL/FRAMING,...").
func listenerPorts(s string) ([]int32, error) {
	var out []int32
	for _, l := range strings.Split(s, ",") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		addr, _, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("listener %q: want ADDR=CHANNEL/FRAMING", l)
		}
		p, err := portOf(addr)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %v", l, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// metricsServiceLabel marks the chart's headless Services that exist only
// for a ServiceMonitor to find the pods' /metrics port.
const metricsServiceLabel = "relay.dev/metrics"

// checkMetricsService: a metrics Service stays inside the cluster (headless
// ClusterIP) and exposes one port only: the one the pod serves /metrics and
// its readiness probe on (RELAY_ADMIN_ADDR's when set), never a listener.
func (c *checker) checkMetricsService(what str, s *corev1.Service, w workload) {
	if s.Spec.Type != corev1.ServiceTypeClusterIP || s.Spec.ClusterIP != corev1.ClusterIPNone {
		c.errorf(what, "metrics Service has type %q clusterIP %q, want a headless ClusterIP", s.Spec.Type, s.Spec.ClusterIP)
	}
	if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Name != "metrics" {
		c.errorf(what, "metrics Service ports %v, want one named metrics", s.Spec.Ports)
		return
	}
	ct := &w.pod.Spec.Containers[0]
	if ct.ReadinessProbe == nil || ct.ReadinessProbe.HTTPGet == nil {
		c.errorf(what, "%s has no HTTP readiness probe to compare the metrics port with", w)
		return
	}
	got, ok := containerPort(ct, s.Spec.Ports[0].TargetPort)
	want, _ := containerPort(ct, ct.ReadinessProbe.HTTPGet.Port)
	if !ok || got != want {
		c.errorf(what, "metrics port targets %s (%d), not the port /metrics and /readyz are served on (%d)", s.Spec.Ports[0].TargetPort.String(), got, want)
	}
}
