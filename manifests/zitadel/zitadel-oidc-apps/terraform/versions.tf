terraform {
  required_version = ">= 1.8.0"

  # Configured by tofu-controller (backendConfig.customConfiguration).
  backend "s3" {}

  required_providers {
    zitadel = {
      source  = "zitadel/zitadel"
      version = "~> 2.2"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.38"
    }
  }
}
