{{/* SPDX-License-Identifier: Apache-2.0 */}}
{{- define "meshwarp.name" -}}{{ printf "%s-node" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "meshwarp.labels" -}}
app.kubernetes.io/name: meshwarp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "meshwarp.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" }}{{ fail "image.tag must not be latest: pin a version or a digest" }}{{ end -}}
{{- if .Values.image.digest -}}{{ .Values.image.repository }}@{{ .Values.image.digest }}{{- else -}}{{ .Values.image.repository }}:{{ $tag }}{{- end -}}
{{- end -}}
{{- define "meshwarp.cniBinDir" -}}
{{- $p := dict "gke" "/home/kubernetes/bin" "k3s" "/var/lib/rancher/k3s/data/cni" "minikube" "/opt/cni/bin" "openshift" "/var/lib/cni/bin" -}}
{{- if .Values.platform }}{{ get $p .Values.platform }}{{ else }}{{ .Values.cniBinDir }}{{ end -}}
{{- end -}}
{{- define "meshwarp.cniConfDir" -}}
{{- $p := dict "gke" "/etc/cni/net.d" "k3s" "/var/lib/rancher/k3s/agent/etc/cni/net.d" "minikube" "/etc/cni/net.d" "openshift" "/etc/kubernetes/cni/net.d" -}}
{{- if .Values.platform }}{{ get $p .Values.platform }}{{ else }}{{ .Values.cniConfDir }}{{ end -}}
{{- end -}}
