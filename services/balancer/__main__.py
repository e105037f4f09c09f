from services.balancer.worker import Balancer, BalancerSettings
from services.runner import main

main("balancer", Balancer, BalancerSettings, "BALANCER")
