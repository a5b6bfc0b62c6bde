# OIDC clients of the Core apps in Zitadel, written to Kubernetes Secrets in
# the apps' namespaces. Runs in the tofu-controller runner (in-cluster
# service account flux-system/tf-runner, see ../rbac.yaml).

provider "kubernetes" {}

data "kubernetes_secret_v1" "provisioner" {
  metadata {
    name      = var.provisioner
    namespace = "iam"
  }
}

provider "zitadel" {
  domain           = "zitadel.${var.domain}"
  port             = "443"
  insecure         = false
  jwt_profile_json = data.kubernetes_secret_v1.provisioner.data["${var.provisioner}.json"]
}

data "zitadel_orgs" "opencsp" {
  name        = var.org_name
  name_method = "TEXT_QUERY_METHOD_EQUALS"
}

locals {
  org_id = data.zitadel_orgs.opencsp.ids[0]
  apps = {
    grafana = {
      namespace     = "monitoring"
      redirect_uris = ["https://grafana.${var.domain}/login/generic_oauth"]
      logout_uris   = ["https://grafana.${var.domain}/login"]
    }
    semaphore = {
      namespace     = "automation"
      redirect_uris = ["https://semaphore.${var.domain}/api/auth/oidc/zitadel/redirect"]
      logout_uris   = ["https://semaphore.${var.domain}/"]
    }
    console = {
      namespace     = "opencsp"
      redirect_uris = ["https://console.${var.domain}/api/auth/callback"]
      logout_uris   = ["https://console.${var.domain}/"]
    }
  }
}

resource "zitadel_project" "opencsp" {
  org_id                 = local.org_id
  name                   = "OpenCSP"
  project_role_assertion = true
}

resource "zitadel_project_role" "admin" {
  org_id       = local.org_id
  project_id   = zitadel_project.opencsp.id
  role_key     = "admin"
  display_name = "OpenCSP administrator"
}

resource "zitadel_application_oidc" "app" {
  for_each = local.apps

  org_id                      = local.org_id
  project_id                  = zitadel_project.opencsp.id
  name                        = each.key
  redirect_uris               = each.value.redirect_uris
  post_logout_redirect_uris   = each.value.logout_uris
  response_types              = ["OIDC_RESPONSE_TYPE_CODE"]
  grant_types                 = ["OIDC_GRANT_TYPE_AUTHORIZATION_CODE", "OIDC_GRANT_TYPE_REFRESH_TOKEN"]
  app_type                    = "OIDC_APP_TYPE_WEB"
  auth_method_type            = "OIDC_AUTH_METHOD_TYPE_BASIC"
  access_token_type           = "OIDC_TOKEN_TYPE_BEARER"
  id_token_role_assertion     = true
  id_token_userinfo_assertion = true
}

# Grafana reads these as environment (envFromSecrets, optional): the secret
# switches its generic OAuth login on.
resource "kubernetes_secret_v1" "grafana" {
  metadata {
    name      = "grafana-oidc"
    namespace = local.apps.grafana.namespace
  }
  data = {
    GF_AUTH_GENERIC_OAUTH_ENABLED       = "true"
    GF_AUTH_GENERIC_OAUTH_CLIENT_ID     = zitadel_application_oidc.app["grafana"].client_id
    GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET = zitadel_application_oidc.app["grafana"].client_secret
  }
}

resource "kubernetes_secret_v1" "client" {
  for_each = { for k, v in local.apps : k => v if k != "grafana" }

  metadata {
    name      = "${each.key}-oidc"
    namespace = each.value.namespace
  }
  data = {
    issuer        = "https://zitadel.${var.domain}"
    client_id     = zitadel_application_oidc.app[each.key].client_id
    client_secret = zitadel_application_oidc.app[each.key].client_secret
  }
}
