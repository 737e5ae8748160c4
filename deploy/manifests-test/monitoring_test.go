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

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/promql/parser"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The operator's files (relative to this module). That every metric they
// name exists in relay's registry is TestOperationsMetricsExist in
// cmd/relay; this module checks their form and that the PromQL parses, with
// Prometheus's own parser (a dependency relay's module does not carry).
var (
	alertsFile    = filepath.Join(chartDir, "files", "alerts.yaml")
	dashboardFile = filepath.Join("..", "grafana", "relay-dashboard.json")
)

const monitoringValues = `
monitoring:
  serviceMonitor: {enabled: true, interval: 30s, labels: {release: kube-prometheus-stack}}
  prometheusRule: {enabled: true, labels: {release: kube-prometheus-stack}, ruleLabels: {team: streaming}}
`

// checkMonitoring: with both toggles on, the ServiceMonitor selects exactly
// the two headless metrics Services (not the public ones), which reach every
// relay pod's http port; the PrometheusRule carries files/alerts.yaml with
// the rule labels added.
func checkMonitoring(t *testing.T, o *objects) {
	sm, ok := o.serviceMonitors["relay"]
	if !ok || len(o.serviceMonitors) != 1 {
		t.Fatalf("ServiceMonitors %v, want relay", sortedKeys(o.serviceMonitors))
	}
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v lack monitoring.serviceMonitor.labels", sm.Labels)
	}
	sel, err := labels.ValidatedSelectorFromSet(sm.Spec.Selector.MatchLabels)
	if err != nil || len(sm.Spec.Selector.MatchExpressions) != 0 {
		t.Fatalf("ServiceMonitor selector %v: %v", sm.Spec.Selector, err)
	}
	var selected []string
	for name, s := range o.services {
		if sel.Matches(labels.Set(s.Labels)) {
			selected = append(selected, name)
		}
	}
	slices.Sort(selected)
	if want := []string{"relay-fanout-metrics", "relay-ingest-metrics"}; !slices.Equal(selected, want) {
		t.Errorf("ServiceMonitor selects Services %v, want %v", selected, want)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want port metrics path /metrics", sm.Spec.Endpoints)
	}
	if got := sm.Spec.NamespaceSelector.MatchNames; !slices.Equal(got, []string{"relay"}) {
		t.Errorf("ServiceMonitor namespaces %v, want the release's", got)
	}
	for _, tier := range []string{"ingest", "fanout"} {
		s := o.services["relay-"+tier+"-metrics"]
		if s == nil {
			continue
		}
		d := o.deployments["relay-"+tier]
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Service/%s does not select Deployment/%s's pods", s.Name, d.Name)
		}
		// relay serves /metrics where it serves /readyz: RELAY_ADMIN_ADDR's
		// port (the chart's default) or the tier's HTTP port.
		c := d.Spec.Template.Spec.Containers[0]
		got, ok := containerPort(&c, s.Spec.Ports[0].TargetPort)
		want, _ := containerPort(&c, c.ReadinessProbe.HTTPGet.Port)
		if !ok || got != want || d.Spec.Template.Annotations["prometheus.io/port"] != fmt.Sprint(want) {
			t.Errorf("Service/%s targets %s (%d), not the port of /readyz and the scrape annotation (%d, %s)",
				s.Name, s.Spec.Ports[0].TargetPort.String(), got, want, d.Spec.Template.Annotations["prometheus.io/port"])
		}
	}

	r, ok := o.rules["relay"]
	if !ok || len(o.rules) != 1 {
		t.Fatalf("PrometheusRules %v, want relay", sortedKeys(o.rules))
	}
	want := alertGroups(t)
	for gi := range want.Groups {
		for ri := range want.Groups[gi].Rules {
			want.Groups[gi].Rules[ri].Labels["team"] = "streaming"
		}
	}
	if !equality.Semantic.DeepEqual(r.Spec, want) {
		t.Errorf("PrometheusRule spec differs from %s plus the rule labels:\n got %+v\nwant %+v", alertsFile, r.Spec, want)
	}
}

// alertGroups decodes files/alerts.yaml strictly: a Prometheus rules file
// has the PrometheusRule spec's shape, so this checks both uses.
func alertGroups(t *testing.T) monitoringv1.PrometheusRuleSpec {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(data, &spec); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return spec
}

var promql = parser.NewParser(parser.Options{})

// TestAlertRules: every rule of files/alerts.yaml is an alert with a PromQL
// expression that parses to a vector, a valid for:, a severity the
// Alertmanager can route on, a summary and a description, and a unique name.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	spec := alertGroups(t)
	names := map[string]bool{}
	for _, g := range spec.Groups {
		if len(g.Rules) == 0 {
			t.Errorf("group %s has no rules", g.Name)
		}
		for _, r := range g.Rules {
			what := g.Name + "/" + r.Alert
			if r.Alert == "" || r.Record != "" {
				t.Errorf("%s: every rule should be an alert (record %q)", what, r.Record)
			}
			if names[r.Alert] {
				t.Errorf("%s: alert name used twice", what)
			}
			names[r.Alert] = true
			expr, err := promql.ParseExpr(r.Expr.String())
			if err != nil {
				t.Errorf("%s: expr does not parse: %v", what, err)
			} else if expr.Type() != parser.ValueTypeVector {
				t.Errorf("%s: expr is a %s, an alert needs a vector", what, expr.Type())
			}
			if r.For != nil {
				if _, err := time.ParseDuration(string(*r.For)); err != nil {
					t.Errorf("%s: for %q: %v", what, *r.For, err)
				}
			}
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want critical, warning or info", what, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", what, a)
				}
			}
		}
	}
	if len(names) < 8 {
		t.Errorf("only %d alerts", len(names))
	}
}

// grafanaVars are values for the dashboard's variables, as Grafana would
// substitute them before sending a query.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m", "${__rate_interval}", "1m",
	"$job", ".*", "${job}", ".*", "$instance", ".*", "${instance}", ".*",
)

var varRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// TestDashboard: the Grafana dashboard is valid JSON whose panels fit the
// 24-column grid without overlapping, use the dashboard's Prometheus
// variable, name only variables it defines, and whose every query parses.
func TestDashboard(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr       string `json:"expr"`
		RefID      string `json:"refId"`
		Datasource struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
	}
	var d struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int                      `json:"id"`
			Type    string                   `json:"type"`
			Title   string                   `json:"title"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []target                 `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard without uid or title")
	}
	defined := map[string]bool{"__rate_interval": true, "__interval": true}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
		if q, ok := v.Query.(map[string]any); ok {
			// label_values(metric{…}, label): its selector must parse.
			s, _ := q["query"].(string)
			if m := regexp.MustCompile(`^label_values\((.*),\s*[a-z_]+\)$`).FindStringSubmatch(s); m != nil {
				if _, err := promql.ParseExpr(grafanaVars.Replace(m[1])); err != nil {
					t.Errorf("variable %s: %q: %v", v.Name, s, err)
				}
			} else {
				t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, s)
			}
		}
	}
	ids := map[int]bool{}
	taken := map[[2]int]string{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for y := g.Y; y < g.Y+g.H; y++ {
			for x := g.X; x < g.X+g.W; x++ {
				if other, ok := taken[[2]int{x, y}]; ok {
					t.Errorf("panel %q overlaps %q at column %d row %d", p.Title, other, x, y)
				}
				taken[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s: datasource %q, want ${datasource}", p.Title, tg.RefID, tg.Datasource.UID)
			}
			for _, m := range varRef.FindAllStringSubmatch(tg.Expr, -1) {
				if !defined[m[1]] {
					t.Errorf("panel %q query %s uses $%s, which the dashboard does not define", p.Title, tg.RefID, m[1])
				}
			}
			if _, err := promql.ParseExpr(grafanaVars.Replace(tg.Expr)); err != nil {
				t.Errorf("panel %q query %s: %v", p.Title, tg.RefID, err)
			}
		}
	}
	if queries < 20 {
		t.Errorf("only %d queries", queries)
	}
}
