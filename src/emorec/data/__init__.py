"""emorec.data"""
