package manifeststest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

func report(t *testing.T, errs []string) {
	t.Helper()
	for _, e := range errs {
		t.Error(e)
	}
}

// TestKustomizeBase decodes every file of k8s/ strictly, builds the base
// as kubectl apply -k would, and checks the invariants on the result.
func TestKustomizeBase(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", k8sDir, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			var k types.Kustomization
			if err := yaml.UnmarshalStrict(data, &k); err != nil {
				t.Errorf("%s: %v", f, err)
			}
			for _, r := range k.Resources {
				if _, err := os.Stat(filepath.Join(k8sDir, r)); err != nil {
					t.Errorf("%s: resource %s: %v", f, r, err)
				}
			}
			continue
		}
		if _, err := decode(f, data); err != nil {
			t.Error(err)
		}
	}

	o, err := decode("kustomize build k8s", kustomizeBuild(t, k8sDir))
	if err != nil {
		t.Fatal(err)
	}
	report(t, checkInvariants(o, relayVars(t)))
	want := []string{
		"ConfigMap/relay-nats",
		"Deployment/relay-fanout", "Deployment/relay-ingest",
		"HorizontalPodAutoscaler/relay-fanout", "HorizontalPodAutoscaler/relay-ingest",
		"PodDisruptionBudget/relay-fanout", "PodDisruptionBudget/relay-ingest", "PodDisruptionBudget/relay-nats",
		"Secret/relay-nats-auth", // NATS authorization (a demo password: see k8s/nats.yaml)
		"Service/relay-fanout", "Service/relay-ingest", "Service/relay-nats", "Service/relay-nats-headless",
		"ServiceAccount/relay",
		"StatefulSet/relay-nats",
	}
	if got := o.keys(); !slices.Equal(got, want) {
		t.Errorf("objects:\n got %v\nwant %v", got, want)
	}
	for _, name := range []string{"relay-ingest", "relay-fanout"} {
		if img := o.deployments[name].Spec.Template.Spec.Containers[0].Image; !strings.HasPrefix(img, "ghcr.io/relaydev/relay:") {
			t.Errorf("%s image %q: the kustomization's images: entry did not apply", name, img)
		}
	}
}

// helmCases are value sets the chart must render into valid objects.
var helmCases = []struct {
	name   string
	values string
	check  func(t *testing.T, o *objects)
}{
	{name: "defaults"},
	{
		name: "autoscaling off",
		values: `
ingest: {autoscaling: {enabled: false}, replicaCount: 3}
fanout: {autoscaling: {enabled: false}, replicaCount: 4}
`,
		check: func(t *testing.T, o *objects) {
			if len(o.hpas) != 0 {
				t.Errorf("HPAs rendered with autoscaling off: %v", sortedKeys(o.hpas))
			}
			for name, want := range map[string]int32{"relay-ingest": 3, "relay-fanout": 4} {
				if r := o.deployments[name].Spec.Replicas; r == nil || *r != want {
					t.Errorf("%s replicas %v, want %d", name, r, want)
				}
			}
		},
	},
	{
		name: "external NATS",
		values: `
nats: {enabled: false}
config: {common: {RELAY_NATS_URL: "nats://a.example:4222,nats://b.example:4222"}}
`,
		check: func(t *testing.T, o *objects) {
			if len(o.statefulsets)+len(o.configmaps) != 0 {
				t.Errorf("NATS objects rendered with nats.enabled=false: %v", o.keys())
			}
			for _, d := range o.deployments {
				if got := envMap(&d.Spec.Template.Spec.Containers[0])["RELAY_NATS_URL"]; got != "nats://a.example:4222,nats://b.example:4222" {
					t.Errorf("%s RELAY_NATS_URL %q", d.Name, got)
				}
			}
		},
	},
	{
		name: "custom ports",
		values: `
config:
  ingest:
    RELAY_INGEST_LISTENERS: ":6000=sensors/len32, :6001=*/raw, :6002=*/line"
    RELAY_INGEST_HTTP_ADDR: "0.0.0.0:9091"
  fanout:
    RELAY_FANOUT_ADDR: ":9090"
fanout: {service: {port: 8443}}
ingest: {service: {externalTrafficPolicy: Local, loadBalancerSourceRanges: ["192.0.2.0/24"]}}
`,
		check: func(t *testing.T, o *objects) {
			var ports []int32
			for _, p := range o.services["relay-ingest"].Spec.Ports {
				ports = append(ports, p.Port)
			}
			if !slices.Equal(ports, []int32{6000, 6001, 6002}) {
				t.Errorf("ingest Service ports %v", ports)
			}
			if s := o.services["relay-ingest"]; s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
				t.Errorf("externalTrafficPolicy %q", s.Spec.ExternalTrafficPolicy)
			}
		},
	},
	{
		name: "big cluster without JetStream and a long drain",
		values: `
config: {common: {RELAY_SHUTDOWN_GRACE: "1m30s", RELAY_LOG_LEVEL: debug}}
ingest:
  terminationGracePeriodSeconds: 100
  autoscaling:
    targetMemoryUtilizationPercentage: 80
    extraMetrics:
      - type: Pods
        pods:
          metric: {name: relay_ingest_connections}
          target: {type: AverageValue, averageValue: "5000"}
fanout: {terminationGracePeriodSeconds: 100, preStopSleepSeconds: 3}
nats: {replicas: 5, jetstream: {enabled: false}}
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
`,
		check: func(t *testing.T, o *objects) {
			if s := o.statefulsets["relay-nats"]; len(s.Spec.VolumeClaimTemplates) != 0 {
				t.Error("volume claims without JetStream")
			}
			if n := len(o.hpas["relay-ingest"].Spec.Metrics); n != 3 {
				t.Errorf("ingest HPA has %d metrics, want cpu, memory and connections", n)
			}
			if img := o.deployments["relay-fanout"].Spec.Template.Spec.Containers[0].Image; !strings.Contains(img, "@sha256:") {
				t.Errorf("image %q does not use the digest", img)
			}
		},
	},
	{
		name: "unquoted numbers",
		values: `
config: {fanout: {RELAY_FANOUT_CLIENT_QUEUE_BYTES: 16777216, RELAY_FANOUT_CLIENT_QUEUE: 4096, RELAY_FANOUT_CLOSE_ON_NATS_LOSS: false}}
`,
		check: func(t *testing.T, o *objects) {
			env := envMap(&o.deployments["relay-fanout"].Spec.Template.Spec.Containers[0])
			for name, want := range map[string]string{
				"RELAY_FANOUT_CLIENT_QUEUE_BYTES": "16777216",
				"RELAY_FANOUT_CLIENT_QUEUE":       "4096",
				"RELAY_FANOUT_CLOSE_ON_NATS_LOSS": "false",
			} {
				if env[name] != want {
					t.Errorf("%s rendered as %q, want %q", name, env[name], want)
				}
			}
		},
	},
	{name: "monitoring", values: monitoringValues, check: checkMonitoring},
	{name: "monitoring without an admin address", values: monitoringValues + `config: {common: {RELAY_ADMIN_ADDR: ""}}`, check: checkMonitoring},
	{
		name: "auth jwt",
		values: `
auth: {existingSecret: relay-auth, publicKeysKey: keys.jwks}
config: {ingest: {RELAY_INGEST_LISTENERS: ":7070=board/line;public,:7071=*/line"}, common: {RELAY_AUTH_PUBLIC_WATCH: "public.>"}}
`,
		check: func(t *testing.T, o *objects) {
			for _, tier := range []string{"relay-ingest", "relay-fanout"} {
				spec := o.deployments[tier].Spec.Template.Spec
				env := envMap(&spec.Containers[0])
				for name, want := range map[string]string{
					"RELAY_AUTH":                  "jwt",
					"RELAY_AUTH_HMAC_SECRET_FILE": "/etc/relay/auth/hmac.secret",
					"RELAY_AUTH_PUBLIC_KEYS_FILE": "/etc/relay/auth/keys.jwks",
					"RELAY_AUTH_PUBLIC_WATCH":     "public.>",
				} {
					if env[name] != want {
						t.Errorf("%s: %s = %q, want %q", tier, name, env[name], want)
					}
				}
				// The bundled NATS's credentials may be mounted beside it.
				authVol := -1
				for i, v := range spec.Volumes {
					if v.Name == "auth" {
						authVol = i
					}
				}
				if authVol < 0 || spec.Volumes[authVol].Secret == nil || spec.Volumes[authVol].Secret.SecretName != "relay-auth" {
					t.Errorf("%s: volumes %+v, want the relay-auth Secret", tier, spec.Volumes)
				}
				authMounts := 0
				for _, m := range spec.Containers[0].VolumeMounts {
					if m.Name != "auth" {
						continue
					}
					authMounts++
					if !m.ReadOnly || m.SubPath != "" || m.MountPath != "/etc/relay/auth" {
						t.Errorf("%s: mount %+v, want read-only at /etc/relay/auth without subPath (so updates arrive)", tier, m)
					}
				}
				if authMounts != 1 {
					t.Errorf("%s: %d mounts of the auth volume, want 1", tier, authMounts)
				}
			}
		},
	},
	{
		name: "other name",
		values: `
fullnameOverride: stream
serviceAccount: {name: stream-sa}
`,
		check: func(t *testing.T, o *objects) {
			if _, ok := o.deployments["stream-ingest"]; !ok {
				t.Errorf("objects %v", o.keys())
			}
			if got := envMap(&o.deployments["stream-fanout"].Spec.Template.Spec.Containers[0])["RELAY_NATS_URL"]; got != "nats://stream-nats:4222" {
				t.Errorf("RELAY_NATS_URL %q", got)
			}
		},
	},
}

// TestHelmChart renders the chart with each value set, decodes strictly and
// checks the invariants.
func TestHelmChart(t *testing.T) {
	t.Parallel()
	vars := relayVars(t)
	for _, tc := range helmCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := helmTemplate(t, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			o, err := decode("helm template ("+tc.name+")", out)
			if err != nil {
				t.Fatal(err)
			}
			report(t, checkInvariants(o, vars))
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// TestHelmRefuses: values that would break relay fail at render time.
func TestHelmRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, values, want string }{
		{"no NATS at all", "nats: {enabled: false}", "RELAY_NATS_URL"},
		{"grace shorter than drain", "ingest: {terminationGracePeriodSeconds: 20}", "terminationGracePeriodSeconds"},
		{"drain longer than grace", `config: {common: {RELAY_SHUTDOWN_GRACE: "1m"}}`, "RELAY_SHUTDOWN_GRACE"},
		{"NATS grace shorter than lame duck", "nats: {terminationGracePeriodSeconds: 30}", "lame duck"},
		{"listener without port", `config: {ingest: {RELAY_INGEST_LISTENERS: "localhost=default/line"}}`, "port"},
		{"misspelt value", "ingest: {autoscalng: {enabled: false}}", "autoscalng"},
		{"misspelt variable", "config: {fanout: {RELAY_FANOUT_ALLOWED_ORIGIN: x}}", "RELAY_FANOUT_ALLOWED_ORIGIN"},
		{"variable in the wrong role", "config: {ingest: {RELAY_FANOUT_ADDR: x}}", "RELAY_FANOUT_ADDR"},
		{"durable channels without JetStream", `{config: {common: {RELAY_DURABLE_CHANNELS: "a.>"}}, nats: {jetstream: {enabled: false}}}`, "needs JetStream"},
		{"more stream copies than NATS nodes", `config: {common: {RELAY_DURABLE_CHANNELS: "a.>", RELAY_DURABLE_REPLICAS: "5"}}`, "RELAY_DURABLE_REPLICAS"},
		{"auth jwt without a key", "auth: {mode: jwt}", "auth.mode is jwt (the default) but no key is given"},
		{"auth jwt with an open fixed listener", "auth: {existingSecret: relay-auth}", `fixed listener ":7070=default/line", which carries no token`},
		{"auth mode misspelt", "auth: {mode: none}", "mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := helmTemplate(t, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template with %s: err = %v, want one mentioning %q", tc.values, err, tc.want)
			}
		})
	}
}

// TestHelmMatchesKustomize: the chart's defaults and the kustomize base
// describe the same objects, with the same ports, probes, drain timing,
// security, resources and scaling. The chart may set more variables.
func TestHelmMatchesKustomize(t *testing.T) {
	t.Parallel()
	out, err := helmTemplate(t, "")
	if err != nil {
		t.Fatal(err)
	}
	h, err := decode("helm", out)
	if err != nil {
		t.Fatal(err)
	}
	k, err := decode("kustomize", kustomizeBuild(t, k8sDir))
	if err != nil {
		t.Fatal(err)
	}
	if hk, kk := h.keys(), k.keys(); !slices.Equal(hk, kk) {
		t.Fatalf("different objects:\nhelm      %v\nkustomize %v", hk, kk)
	}
	same := func(what string, a, b any) {
		t.Helper()
		if !equality.Semantic.DeepEqual(a, b) {
			t.Errorf("%s differs:\nhelm      %+v\nkustomize %+v", what, a, b)
		}
	}
	for _, hw := range h.workloads() {
		var kw workload
		for _, w := range k.workloads() {
			if w.String() == hw.String() {
				kw = w
			}
		}
		hp, kp := hw.pod.Spec, kw.pod.Spec
		same(hw.String()+" replicas", fmt.Sprint(deref(hw.replicas)), fmt.Sprint(deref(kw.replicas)))
		same(hw.String()+" terminationGracePeriodSeconds", deref(hp.TerminationGracePeriodSeconds), deref(kp.TerminationGracePeriodSeconds))
		same(hw.String()+" pod securityContext", hp.SecurityContext, kp.SecurityContext)
		same(hw.String()+" selector", hw.selector, kw.selector)
		for i := range hp.Containers {
			hc, kc := hp.Containers[i], kp.Containers[i]
			what := hw.String() + " container " + hc.Name
			same(what+" name", hc.Name, kc.Name)
			same(what+" args", hc.Args, kc.Args)
			same(what+" ports", hc.Ports, kc.Ports)
			same(what+" startupProbe", hc.StartupProbe, kc.StartupProbe)
			same(what+" livenessProbe", hc.LivenessProbe, kc.LivenessProbe)
			same(what+" readinessProbe", hc.ReadinessProbe, kc.ReadinessProbe)
			same(what+" preStop", hc.Lifecycle.PreStop, kc.Lifecycle.PreStop)
			same(what+" resources", hc.Resources, kc.Resources)
			same(what+" securityContext", hc.SecurityContext, kc.SecurityContext)
			same(what+" volumeMounts", hc.VolumeMounts, kc.VolumeMounts)
			he := envMap(&hc)
			for _, e := range kc.Env {
				if e.ValueFrom != nil {
					continue
				}
				if he[e.Name] != e.Value {
					t.Errorf("%s env %s: helm %q, kustomize %q", what, e.Name, he[e.Name], e.Value)
				}
			}
		}
		if hw.sts != nil {
			same(hw.String()+" serviceName", hw.sts.Spec.ServiceName, kw.sts.Spec.ServiceName)
			same(hw.String()+" volumeClaimTemplates", hw.sts.Spec.VolumeClaimTemplates[0].Spec, kw.sts.Spec.VolumeClaimTemplates[0].Spec)
		}
	}
	for name, s := range h.services {
		same("Service/"+name+" type", s.Spec.Type, k.services[name].Spec.Type)
		same("Service/"+name+" ports", s.Spec.Ports, k.services[name].Spec.Ports)
		same("Service/"+name+" clusterIP", s.Spec.ClusterIP, k.services[name].Spec.ClusterIP)
	}
	for name, a := range h.hpas {
		same("HorizontalPodAutoscaler/"+name, a.Spec, k.hpas[name].Spec)
	}
	for name, p := range h.pdbs {
		same("PodDisruptionBudget/"+name, p.Spec, k.pdbs[name].Spec)
	}
	for name, c := range h.configmaps {
		for key, v := range c.Data {
			same("ConfigMap/"+name+" "+key, stripConf(v), stripConf(k.configmaps[name].Data[key]))
		}
	}
}

// deref shows a pointer's value ("<nil>" for nil) in messages.
func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

var confComment = regexp.MustCompile(`(?m)\s*#.*$`)

// stripConf drops comments and blank lines from a NATS config.
func stripConf(s string) []string {
	var out []string
	for _, l := range strings.Split(confComment.ReplaceAllString(s, ""), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestValuesListEveryVariable: values.yaml's config lists every variable of
// relay's Common, Ingest and Fanout config, with relay's own default except
// where the chart deliberately differs.
func TestValuesListEveryVariable(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Config map[string]map[string]any `json:"config"`
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	deliberate := map[string]string{
		"RELAY_NATS_URL":   "", // computed: the bundled NATS Service
		"RELAY_LOG_FORMAT": "json",
		"RELAY_AUTH":       "",      // computed: auth.mode
		"RELAY_ADMIN_ADDR": ":8090", // metrics and health off the public ports
		// The bundled NATS has 3 JetStream nodes (docs/architecture.md, Durable channels).
		"RELAY_DURABLE_REPLICAS": "3",
	}
	vars := relayVars(t)
	for _, v := range vars {
		if !slices.Contains([]string{"common", "ingest", "fanout"}, v.Group) {
			continue
		}
		got, ok := values.Config[v.Group][v.Name]
		if !ok {
			t.Errorf("values.yaml: config.%s.%s missing (declared in %s, default %q)", v.Group, v.Name, configSrc, v.Default)
			continue
		}
		s, isString := got.(string)
		if !isString {
			t.Errorf("values.yaml: config.%s.%s = %v: quote it (Helm prints large numbers as floats)", v.Group, v.Name, got)
			continue
		}
		want, special := deliberate[v.Name]
		if !special {
			want = v.Default
		}
		if s != want {
			t.Errorf("values.yaml: config.%s.%s = %q, relay's default is %q", v.Group, v.Name, s, want)
		}
	}
	// values.schema.json must name exactly the same variables, so a
	// misspelt one in a user's values fails at install time.
	schemaData, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	type props struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	var schema struct {
		Properties struct {
			Config struct {
				Properties map[string]props `json:"properties"`
			} `json:"config"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(schemaData, &schema); err != nil {
		t.Fatal(err)
	}
	for _, group := range []string{"common", "ingest", "fanout"} {
		var inSchema, inConfig []string
		for name := range schema.Properties.Config.Properties[group].Properties {
			inSchema = append(inSchema, name)
		}
		for _, v := range vars {
			if v.Group == group {
				inConfig = append(inConfig, v.Name)
			}
		}
		slices.Sort(inSchema)
		slices.Sort(inConfig)
		if !slices.Equal(inSchema, inConfig) {
			t.Errorf("values.schema.json config.%s:\n got %v\nwant %v (from %s)", group, inSchema, inConfig, configSrc)
		}
	}
	for group, m := range values.Config {
		for name := range m {
			if v, ok := vars[name]; !ok || v.Group != group {
				t.Errorf("values.yaml: config.%s.%s is not a %s variable of relay", group, name, group)
			}
		}
	}
}

// TestComposeFile checks docker-compose.yml's relay services the same way:
// known variables, a stop grace longer than the drain, healthchecks on the
// right port, and nothing that stops `--scale` (fixed names or host ports).
func TestComposeFile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]map[string]any `json:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	vars := relayVars(t)
	for _, role := range []string{"ingest", "fanout"} {
		s, ok := compose.Services[role]
		if !ok {
			t.Errorf("no %s service", role)
			continue
		}
		if _, ok := s["container_name"]; ok {
			t.Errorf("%s: container_name prevents --scale", role)
		}
		if _, ok := s["ports"]; ok {
			t.Errorf("%s: published ports prevent --scale (the load balancer publishes)", role)
		}
		env := map[string]string{}
		if m, ok := s["environment"].(map[string]any); ok {
			for k, v := range m {
				env[k] = fmt.Sprint(v)
			}
		} else {
			t.Errorf("%s: environment should be a map", role)
		}
		for name := range env {
			if v, ok := vars[name]; !ok || !slices.Contains(roleGroups[role], v.Group) {
				t.Errorf("%s: %s is not a variable relay %s reads", role, name, role)
			}
		}
		gs, _ := effective(vars, env, "RELAY_SHUTDOWN_GRACE")
		grace, err := time.ParseDuration(gs)
		if err != nil {
			t.Errorf("%s: RELAY_SHUTDOWN_GRACE %q: %v", role, gs, err)
		}
		stop, err := time.ParseDuration(fmt.Sprint(s["stop_grace_period"]))
		if err != nil || stop < grace+drainMargin {
			t.Errorf("%s: stop_grace_period %v must exceed RELAY_SHUTDOWN_GRACE %s + %s", role, s["stop_grace_period"], grace, drainMargin)
		}
		httpVar := map[string]string{"ingest": "RELAY_INGEST_HTTP_ADDR", "fanout": "RELAY_FANOUT_ADDR"}[role]
		addr, _ := effective(vars, env, httpVar)
		port, _ := portOf(addr)
		hc, _ := s["healthcheck"].(map[string]any)
		test := fmt.Sprint(hc["test"])
		if !strings.Contains(test, fmt.Sprintf(":%d/readyz", port)) {
			t.Errorf("%s: healthcheck %s should GET /readyz on %s's port %d", role, test, httpVar, port)
		}
	}
}
