# The Envoy container of the ECS task: the official image with the tested config baked in
# (deploy/ecs/envoy.yaml, generated from envoy/envoy.yaml: same routes and edge settings, the
# listener on every interface for the load balancer, cognito-authz and the app on localhost,
# which awsvpc networking shares between the task's containers).
#   docker build -f deploy/ecs/envoy.Dockerfile -t cruddur-envoy .
FROM envoyproxy/envoy:v1.40-latest
COPY deploy/ecs/envoy.yaml /etc/envoy/envoy.yaml
