{{/*
Objects shared by the two relay tiers. Each define takes
(dict "root" $ "tier" "ingest"|"fanout" "ports" LIST "httpPort" N)
where ports is a list of container port numbers besides the HTTP port.
*/}}

{{- define "relay.tier.deployment" -}}
{{- $root := .root }}
{{- $v := index $root.Values .tier }}
{{- $ctx := dict "root" $root "component" .tier }}
{{- $admin := include "relay.adminPort" $root }}
{{- $probePort := ternary "admin" "http" (ne $admin "") }}
{{- if and $admin (eq $admin (toString .httpPort)) }}
{{- fail (printf "RELAY_ADMIN_ADDR's port %s is also %s's HTTP port: give the admin address a port of its own" $admin .tier) }}
{{- end }}
{{- $grace := include "relay.durationSeconds" ($root.Values.config.common.RELAY_SHUTDOWN_GRACE | default "20s") | int }}
{{- if le (int $v.terminationGracePeriodSeconds) (add $grace (int $v.preStopSleepSeconds)) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must exceed %s.preStopSleepSeconds (%v) + RELAY_SHUTDOWN_GRACE (%ds), or Kubernetes kills relay mid-drain" .tier $v.terminationGracePeriodSeconds .tier $v.preStopSleepSeconds $grace) }}
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "relay.fullname" $root }}-{{ .tier }}
  labels:
    {{- include "relay.labels" $ctx | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- with $v.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "relay.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "relay.selectorLabels" $ctx | nindent 8 }}
        app.kubernetes.io/part-of: relay
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $admin | default .httpPort | quote }}
        prometheus.io/path: /metrics
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "relay.serviceAccountName" $root }}
      automountServiceAccountToken: false
      # A Service named like a RELAY_* prefix would inject RELAY_..._PORT
      # variables into the environment relay reads its config from.
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      topologySpreadConstraints:
        {{- if $v.topologySpreadConstraints }}
        {{- toYaml $v.topologySpreadConstraints | nindent 8 }}
        {{- else }}
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "relay.selectorLabels" $ctx | nindent 14 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .tier }}
          image: {{ include "relay.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .tier | quote }}]
          env:
            - name: RELAY_NATS_URL
              value: {{ include "relay.natsURL" $root | quote }}
            {{- range $k, $val := $root.Values.config.common }}
            {{- if and (ne $k "RELAY_NATS_URL") (ne (toString $val) "") }}
            - name: {{ $k }}
              value: {{ include "relay.envValue" $val | quote }}
            {{- end }}
            {{- end }}
            {{- range $k, $val := index $root.Values.config .tier }}
            {{- if ne (toString $val) "" }}
            - name: {{ $k }}
              value: {{ include "relay.envValue" $val | quote }}
            {{- end }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- range .ports }}
            - name: tcp-{{ . }}
              containerPort: {{ . }}
              protocol: TCP
            {{- end }}
            - name: http
              containerPort: {{ .httpPort }}
              protocol: TCP
            {{- if $admin }}
            # RELAY_ADMIN_ADDR: metrics, health, readiness; no Service exposes it.
            - name: admin
              containerPort: {{ $admin }}
              protocol: TCP
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: {{ $probePort }}
            periodSeconds: 2
            failureThreshold: 30
          livenessProbe:
            httpGet:
              path: /healthz
              port: {{ $probePort }}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: {{ $probePort }}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          lifecycle:
            # Keep serving while the endpoint removal reaches the load
            # balancers, then SIGTERM starts relay's drain. The sleep action
            # needs no shell (the image has none).
            preStop:
              sleep:
                seconds: {{ $v.preStopSleepSeconds }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
{{- end }}

{{- define "relay.tier.hpa" -}}
{{- $root := .root }}
{{- $v := index $root.Values .tier }}
{{- $ctx := dict "root" $root "component" .tier }}
{{- if $v.autoscaling.enabled }}
{{- if lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas) }}
{{- fail (printf "%s.autoscaling.maxReplicas must be at least minReplicas" .tier) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "relay.fullname" $root }}-{{ .tier }}
  labels:
    {{- include "relay.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "relay.fullname" $root }}-{{ .tier }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    {{- with $v.autoscaling.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with $v.autoscaling.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with $v.autoscaling.extraMetrics }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.autoscaling.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "relay.tier.pdb" -}}
{{- $root := .root }}
{{- $v := index $root.Values .tier }}
{{- $ctx := dict "root" $root "component" .tier }}
{{- if $v.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "relay.fullname" $root }}-{{ .tier }}
  labels:
    {{- include "relay.labels" $ctx | nindent 4 }}
spec:
  {{- if $v.pdb.minAvailable }}
  minAvailable: {{ $v.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $v.pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "relay.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end }}

{{/* Service fields shared by both tiers' Services. */}}
{{- define "relay.tier.serviceSpec" -}}
type: {{ .service.type }}
{{- if and .service.externalTrafficPolicy (ne .service.type "ClusterIP") }}
externalTrafficPolicy: {{ .service.externalTrafficPolicy }}
{{- end }}
{{- if and .service.loadBalancerClass (eq .service.type "LoadBalancer") }}
loadBalancerClass: {{ .service.loadBalancerClass }}
{{- end }}
{{- with .service.loadBalancerSourceRanges }}
loadBalancerSourceRanges:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
