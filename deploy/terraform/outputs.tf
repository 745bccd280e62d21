output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "region" {
  description = "AWS region of the cluster."
  value       = var.region
}

output "kubeconfig_command" {
  description = "Run this to point kubectl and helm at the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "data_bucket" {
  description = "Name of the lab's S3 bucket (buckets.shared[].name or buckets.home.name in posehub.yaml)."
  value       = aws_s3_bucket.data.id
}

output "data_bucket_arn" {
  description = "ARN of the lab's S3 bucket (for the role in buckets.sts.role_arn)."
  value       = aws_s3_bucket.data.arn
}

output "cluster_autoscaler_role_arn" {
  description = "IAM role of the cluster autoscaler's service account (kube-system/cluster-autoscaler)."
  value       = module.cluster_autoscaler_irsa.iam_role_arn
}

output "hub_role_arn" {
  description = "IAM role of the hub's service account (hub.serviceAccount.annotations eks.amazonaws.com/role-arn)."
  value       = module.hub_irsa.iam_role_arn
}

output "users_role_arn" {
  description = "The users' role: buckets.sts.role_arn in posehub.yaml."
  value       = aws_iam_role.users.arn
}

output "ledger_url" {
  description = "costs.db_url in posehub.yaml (its password goes in the Secret posehub-db)."
  value       = "postgresql+psycopg://${aws_db_instance.ledger.username}@${aws_db_instance.ledger.address}:${aws_db_instance.ledger.port}/${aws_db_instance.ledger.db_name}"
}

output "ledger_password_secret_arn" {
  description = "Secrets Manager secret holding the ledger's password (kubectl create secret generic posehub-db ...)."
  value       = aws_db_instance.ledger.master_user_secret[0].secret_arn
}
