variable "domain" {
  description = "Cluster base domain (CLUSTER_DOMAIN)."
  type        = string
}

variable "org_name" {
  description = "Zitadel organization created by FirstInstance."
  type        = string
  default     = "OpenCSP"
}

variable "provisioner" {
  description = "Machine user (and Secret in iam) holding the Zitadel API key."
  type        = string
  default     = "opencsp-provisioner"
}
