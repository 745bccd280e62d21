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
