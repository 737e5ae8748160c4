package manifeststest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Paths from this module's directory (deploy/manifests-test).
const (
	repoRoot  = "../.."
	k8sDir    = "../../k8s"
	chartDir  = "../helm/relay"
	configSrc = "../../shared/config/config.go"
	// helm template needs a cluster version for the chart's kubeVersion
	// (>= 1.30, for the preStop sleep action); a helm built with
	// `go install` assumes an old one.
	kubeVersion = "1.31.0"
)

// objects is one rendering of the manifests, indexed by kind.
type objects struct {
	source       string
	all          []named
	deployments  map[string]*appsv1.Deployment
	statefulsets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configmaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret // the bundled NATS's generated password (nats.auth)
	accounts     map[string]*corev1.ServiceAccount
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs         map[string]*policyv1.PodDisruptionBudget
	// Prometheus Operator objects (the chart's monitoring.* values).
	serviceMonitors map[string]*monitoringv1.ServiceMonitor
	rules           map[string]*monitoringv1.PrometheusRule
}

type named struct {
	Kind, Name string
	Meta       *metav1.ObjectMeta
}

func (n named) String() string { return n.Kind + "/" + n.Name }

// decode splits a multi-document YAML stream and decodes every document
// strictly: unknown fields, duplicate keys and unknown kinds are errors.
func decode(source string, data []byte) (*objects, error) {
	o := &objects{
		source:       source,
		deployments:  map[string]*appsv1.Deployment{},
		statefulsets: map[string]*appsv1.StatefulSet{},
		services:     map[string]*corev1.Service{},
		configmaps:   map[string]*corev1.ConfigMap{},
		secrets:      map[string]*corev1.Secret{},
		accounts:     map[string]*corev1.ServiceAccount{},
		hpas:         map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		pdbs:         map[string]*policyv1.PodDisruptionBudget{},

		serviceMonitors: map[string]*monitoringv1.ServiceMonitor{},
		rules:           map[string]*monitoringv1.PrometheusRule{},
	}
	var errs []error
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if err := o.add(doc); err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", source, i, err))
		}
	}
	return o, errors.Join(errs...)
}

func (o *objects) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	if tm.Kind == "" && tm.APIVersion == "" {
		// Only comments or whitespace (helm emits such documents).
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil || v == nil {
			return err
		}
		return errors.New("document without apiVersion and kind")
	}
	var (
		meta *metav1.ObjectMeta
		name string
	)
	strict := func(into any, m *metav1.ObjectMeta) error {
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			return fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
		}
		meta, name = m, m.Name
		return nil
	}
	var err error
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		v := &appsv1.Deployment{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.deployments, name, v)
		}
	case "apps/v1 StatefulSet":
		v := &appsv1.StatefulSet{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.statefulsets, name, v)
		}
	case "v1 Service":
		v := &corev1.Service{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.services, name, v)
		}
	case "v1 ConfigMap":
		v := &corev1.ConfigMap{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.configmaps, name, v)
		}
	case "v1 Secret":
		v := &corev1.Secret{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.secrets, name, v)
		}
	case "v1 ServiceAccount":
		v := &corev1.ServiceAccount{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.accounts, name, v)
		}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		v := &autoscalingv2.HorizontalPodAutoscaler{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.hpas, name, v)
		}
	case "policy/v1 PodDisruptionBudget":
		v := &policyv1.PodDisruptionBudget{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.pdbs, name, v)
		}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		v := &monitoringv1.ServiceMonitor{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.serviceMonitors, name, v)
		}
	case "monitoring.coreos.com/v1 PrometheusRule":
		v := &monitoringv1.PrometheusRule{}
		if err = strict(v, &v.ObjectMeta); err == nil {
			err = put(o.rules, name, v)
		}
	default:
		return fmt.Errorf("unexpected kind %s %s (add it to the manifest test on purpose)", tm.APIVersion, tm.Kind)
	}
	if err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	o.all = append(o.all, named{Kind: tm.Kind, Name: name, Meta: meta})
	return nil
}

func put[T any](m map[string]T, name string, v T) error {
	if _, dup := m[name]; dup {
		return fmt.Errorf("duplicate object %q", name)
	}
	m[name] = v
	return nil
}

// keys lists kind/name of every object, sorted.
func (o *objects) keys() []string {
	var out []string
	for _, n := range o.all {
		out = append(out, n.String())
	}
	sort.Strings(out)
	return out
}

// kustomizeBuild renders the kustomize base in dir, as `kubectl apply -k` would.
func kustomizeBuild(t *testing.T, dir string) []byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return out
}

// helmBinary is helm from $HELM or PATH. The test fails without it, so a
// CI without helm cannot pass by skipping the chart.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		t.Fatal("helm not found: put it on PATH or set HELM (deploy/ci.sh installs it)")
	}
	return h
}

// helmTemplate renders the chart as release "relay" with extra values (YAML).
func helmTemplate(t *testing.T, values string) ([]byte, error) {
	t.Helper()
	args := []string{"template", "relay", chartDir, "--kube-version", kubeVersion, "--namespace", "relay"}
	if !strings.Contains(values, "auth:") {
		// The chart's auth.mode=jwt needs a Secret and handshake-only
		// listeners; cases about other things render with auth off, as the
		// kustomize base runs. The auth cases say what they want.
		args = append(args, "--set", "auth.mode=off")
	}
	if values != "" {
		// Not t.TempDir: helm splits --values on commas, and the
		// directory is named after the test.
		f, err := os.CreateTemp("", "relay-values-*.yaml")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(f.Name()) })
		if _, err := f.WriteString(values); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f.Name())
	}
	cmd := exec.Command(helmBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
