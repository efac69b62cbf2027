"""emorec.evaluation"""
