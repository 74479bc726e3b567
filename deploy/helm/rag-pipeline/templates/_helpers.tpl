{{/* Names of this release's objects: "<release>-<component>". */}}
{{- define "rag-pipeline.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rag-pipeline.labels" -}}
app.kubernetes.io/name: rag-pipeline-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "rag-pipeline.selector" -}}
app.kubernetes.io/name: rag-pipeline-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* The pipeline's settings, then the component's own (`extra`, a map) over them. */}}
{{- define "rag-pipeline.env" -}}
{{- $env := merge (deepCopy (.extra | default dict)) .root.Values.env -}}
{{- range $name := keys $env | sortAlpha }}
- name: {{ $name }}
  value: {{ index $env $name | toString | quote }}
{{- end }}
{{- end -}}

{{/* A container of the image: `command`, the settings (`extra` over them, `secretEnv`
from other Secrets), the Secret, Kafka's CA and `mounts`, and `more` container fields. */}}
{{- define "rag-pipeline.container" -}}
- name: {{ .component }}
  image: "{{ .root.Values.image.repository }}:{{ .root.Values.image.tag }}"
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: {{ toJson .command }}
  env:
    {{- include "rag-pipeline.env" . | nindent 4 }}
    {{- with .secretEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  envFrom:
    - secretRef: {name: {{ .root.Values.secretName }}}
  {{- with .more }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- if .root.Values.kafkaCaSecretName }}
  volumeMounts:
    - {name: kafka-ca, mountPath: {{ .root.Values.kafkaCaMountPath }}, readOnly: true}
    {{- with .mounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- else if .mounts }}
  volumeMounts:
    {{- toYaml .mounts | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "rag-pipeline.volumes" -}}
{{- if or .root.Values.kafkaCaSecretName .volumes }}
volumes:
  {{- if .root.Values.kafkaCaSecretName }}
  - name: kafka-ca
    secret: {secretName: {{ .root.Values.kafkaCaSecretName }}}
  {{- end }}
  {{- with .volumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end -}}
