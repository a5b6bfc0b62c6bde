output "project_id" {
  value = zitadel_project.opencsp.id
}

output "client_ids" {
  value = { for k, a in zitadel_application_oidc.app : k => a.client_id }
}
